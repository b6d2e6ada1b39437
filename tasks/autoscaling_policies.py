"""A scaling group's named items, as 2018-04-19 has them: scheduled actions (the lunch peak) and alarm policies (CPU).

Each is created or modified by its name (their creates take no ClientToken: the name is what a retry finds), and
deleted by its name.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.autoscaling import paged
from tasks.autoscaling_models import AlarmPolicy, ScheduledAction
from tasks.cloud import call_json, clients_for, retrying


def scheduled_actions(region: str, group_id: str) -> list[ScheduledAction]:
    filters = [{"Name": "auto-scaling-group-id", "Values": [group_id]}]
    found = paged(region, "DescribeScheduledActions", {"Filters": filters}, "ScheduledActionSet")
    return [ScheduledAction.from_api(i) for i in found]


def alarm_policies(region: str, group_id: str) -> list[AlarmPolicy]:
    filters = [{"Name": "auto-scaling-group-id", "Values": [group_id]}]
    found = paged(region, "DescribeScalingPolicies", {"Filters": filters}, "ScalingPolicySet")
    return [AlarmPolicy.from_api(i) for i in found if i.get("ScalingPolicyType", "SIMPLE") == "SIMPLE"]


Named = TypeVar("Named", ScheduledAction, AlarmPolicy)


def _named(items: list[Named], name: str) -> Named | None:
    return next((i for i in items if i.name == name), None)


def _put_by_name(
    region: str,
    group_id: str,
    name: str,
    body: dict[str, Any],
    existing_id: str | None,
    create: str,
    modify: str,
    id_field: str,
    name_field: str,
) -> str:
    """A group's named item (scheduled action, alarm policy): modify the one of that name, else create it; its id.
    Their creates take no ClientToken: the name is what a retry finds."""
    client = clients_for(region).autoscaling
    if existing_id is not None:
        call_json(client, modify, {id_field: existing_id, **body})
        return existing_id
    return str(call_json(client, create, {"AutoScalingGroupId": group_id, name_field: name, **body})[id_field])


@task(name="put-scheduled-action", cache_policy=NO_CACHE)
@retrying()
def put_scheduled_action(region: str, group_id: str, action: ScheduledAction) -> ScheduledAction:
    """Create the named scheduled action, or modify the one of that name in the group."""
    body: dict[str, Any] = {
        "MinSize": action.min_size,
        "MaxSize": action.max_size,
        "DesiredCapacity": action.desired,
        "StartTime": action.start_time,
    }
    if action.recurrence:
        body |= {"Recurrence": action.recurrence, "EndTime": action.end_time}
    existing = _named(scheduled_actions(region, group_id), action.name)
    action_id = _put_by_name(
        region,
        group_id,
        action.name,
        body,
        existing_id=existing.action_id if existing else None,
        create="CreateScheduledAction",
        modify="ModifyScheduledAction",
        id_field="ScheduledActionId",
        name_field="ScheduledActionName",
    )
    return action.model_copy(update={"action_id": action_id})


@task(name="delete-scheduled-action", cache_policy=NO_CACHE)
@retrying()
def delete_scheduled_action(region: str, group_id: str, name: str) -> bool:
    existing = _named(scheduled_actions(region, group_id), name)
    if existing is None:
        return False
    call_json(clients_for(region).autoscaling, "DeleteScheduledAction", {"ScheduledActionId": existing.action_id})
    return True


@task(name="put-alarm-policy", cache_policy=NO_CACHE)
@retrying()
def put_alarm_policy(region: str, group_id: str, policy: AlarmPolicy) -> AlarmPolicy:
    """Create the named SIMPLE alarm policy, or modify the group's policy of that name."""
    existing = _named(alarm_policies(region, group_id), policy.name)
    policy_id = _put_by_name(
        region,
        group_id,
        policy.name,
        policy.api(),
        existing_id=existing.policy_id if existing else None,
        create="CreateScalingPolicy",
        modify="ModifyScalingPolicy",
        id_field="AutoScalingPolicyId",
        name_field="ScalingPolicyName",
    )
    return policy.model_copy(update={"policy_id": policy_id})


@task(name="delete-alarm-policy", cache_policy=NO_CACHE)
@retrying()
def delete_alarm_policy(region: str, group_id: str, name: str) -> bool:
    existing = _named(alarm_policies(region, group_id), name)
    if existing is None:
        return False
    call_json(clients_for(region).autoscaling, "DeleteScalingPolicy", {"AutoScalingPolicyId": existing.policy_id})
    return True
