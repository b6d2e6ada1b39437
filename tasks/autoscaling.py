"""Thin typed calls over Auto Scaling (as 2018-04-19): scaling groups, their servers and activities, and the waits
on those activities. Launch configurations are tasks/autoscaling_launch_configurations.py, a group's scheduled actions
and alarm policies tasks/autoscaling_policies.py, the undo of a run's changes to groups tasks/autoscaling_undo.py.

Every write is a Prefect task retried on retryable codes only (`tasks.cloud.retrying`). Auto Scaling's creates
take no ClientToken, so each create finds its resource by name first (a retry, or a re-run, adopts it).
Activities are eventually consistent: right after a change, DescribeAutoScalingActivities may list nothing, which
is "not yet", never an index to take. A desired-capacity write whose answer was lost may still take effect later: a
write of another value to that group waits until it no longer can (tasks/lost_writes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.autoscaling_models import (
    FINISHED_OK,
    Activity,
    AlarmPolicy,
    ForwardLoadBalancer,
    Group,
    LaunchConfiguration,
    Member,
    ScheduledAction,
)
from tasks.cloud import call_json, clients_for, retrying
from tasks.lost_writes import write_outlasting
from tasks.waiters import wait_until

__all__ = [
    "Activity",
    "AlarmPolicy",
    "ForwardLoadBalancer",
    "Group",
    "LaunchConfiguration",
    "Member",
    "ScheduledAction",
]  # the models, for callers that `import tasks.autoscaling as asg`

PAGE = 100
GroupObserver = Callable[[Group | None, list[Activity]], None]  # what a wait saw at each poll


def api_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    """`tags` as a create's `Tags` parameter."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def paged(region: str, action: str, request: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        answer = call_json(clients_for(region).autoscaling, action, {**request, "Offset": offset, "Limit": PAGE})
        page = answer.get(key) or []
        items += page
        offset += len(page)
        if not page or offset >= int(answer.get("TotalCount") or 0):
            return items


# --- reads ----------------------------------------------------------------------------------------------------


def find_group(region: str, name: str) -> Group | None:
    filters = [{"Name": "auto-scaling-group-name", "Values": [name]}]
    found = paged(region, "DescribeAutoScalingGroups", {"Filters": filters}, "AutoScalingGroupSet")
    return next((Group.from_api(i) for i in found if i["AutoScalingGroupName"] == name), None)


def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
    """A describe's `Filters` that match every one of `tags`."""
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]


def tagged_groups(region: str, tags: dict[str, str]) -> list[Group]:
    """The scaling groups carrying every one of `tags`, each value matching exactly."""
    found = paged(region, "DescribeAutoScalingGroups", {"Filters": tag_filters(tags)}, "AutoScalingGroupSet")
    return [g for g in (Group.from_api(i) for i in found) if g.carries(tags)]


def groups_using(region: str, lc_id: str) -> list[Group]:
    filters = [{"Name": "launch-configuration-id", "Values": [lc_id]}]
    found = paged(region, "DescribeAutoScalingGroups", {"Filters": filters}, "AutoScalingGroupSet")
    return [g for g in (Group.from_api(i) for i in found) if g.launch_configuration_id == lc_id]


def describe_group(region: str, group_id: str) -> Group | None:
    answer = call_json(
        clients_for(region).autoscaling, "DescribeAutoScalingGroups", {"AutoScalingGroupIds": [group_id]}
    )
    found = answer.get("AutoScalingGroupSet") or []
    return Group.from_api(found[0]) if found else None


def members(region: str, group_id: str) -> list[Member]:
    filters = [{"Name": "auto-scaling-group-id", "Values": [group_id]}]
    found = paged(region, "DescribeAutoScalingInstances", {"Filters": filters}, "AutoScalingInstanceSet")
    return [Member.from_api(i) for i in found]


def membership_of(region: str, instance_ids: list[str]) -> dict[str, Member]:
    """{instance id: its membership} for those of `instance_ids` in any scaling group."""
    if not instance_ids:
        return {}
    found = paged(region, "DescribeAutoScalingInstances", {"InstanceIds": instance_ids}, "AutoScalingInstanceSet")
    return {i["InstanceId"]: Member.from_api(i) for i in found}


def activities(region: str, group_id: str, limit: int = PAGE) -> list[Activity]:
    """The group's activities, newest first (possibly none yet)."""
    filters = [{"Name": "auto-scaling-group-id", "Values": [group_id]}]
    answer = call_json(
        clients_for(region).autoscaling, "DescribeAutoScalingActivities", {"Filters": filters, "Limit": limit}
    )
    return [Activity.from_api(i) for i in answer.get("ActivitySet") or []]


def describe_activity(region: str, activity_id: str) -> Activity | None:
    answer = call_json(clients_for(region).autoscaling, "DescribeAutoScalingActivities", {"ActivityIds": [activity_id]})
    found = answer.get("ActivitySet") or []
    return Activity.from_api(found[0]) if found else None  # not listed yet: eventual consistency


def cloud_now(region: str, group: Group) -> datetime:
    """Now, never earlier than the cloud's own latest timestamp of the group (its creation, its activities): a
    schedule computed from a local clock that runs behind would start "before the current time"."""
    stamps = [datetime.now(UTC), _parse(group.created_time)]
    for activity in activities(region, group.group_id, 20):
        stamps += [_parse(activity.start_time), _parse(activity.end_time)]
    return max(s for s in stamps if s is not None)


def _parse(stamp: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- writes ---------------------------------------------------------------------------------------------------


@task(name="create-scaling-group", cache_policy=NO_CACHE)
@retrying()
def create_group(region: str, name: str, request: dict[str, Any], tags: dict[str, str]) -> tuple[Group, bool]:
    found = find_group(region, name)
    if found is not None:
        return found, False
    body = {**request, "AutoScalingGroupName": name, "Tags": api_tags(tags)}
    group_id = call_json(clients_for(region).autoscaling, "CreateAutoScalingGroup", body)["AutoScalingGroupId"]
    group = wait_until(
        lambda: describe_group(region, group_id),
        done=lambda g: g is not None,
        failed=lambda _: None,
        what=f"scaling group {group_id} to be listed",
        timeout=60,
    )
    assert group is not None
    return group, True


@task(name="modify-scaling-group", cache_policy=NO_CACHE)
@retrying()
def modify_group(region: str, group_id: str, changes: dict[str, Any]) -> None:
    def write() -> None:
        request = {"AutoScalingGroupId": group_id, **changes}
        call_json(clients_for(region).autoscaling, "ModifyAutoScalingGroup", request)

    if "DesiredCapacity" in changes:
        write_outlasting(("desired", region, group_id), changes["DesiredCapacity"], write)
    else:
        write()


@task(name="remove-instances", cache_policy=NO_CACHE)
@retrying()
def remove_instances(region: str, group_id: str, instance_ids: list[str]) -> str:
    """Out of the group: attached servers are detached, servers the group launched are terminated."""
    request = {"AutoScalingGroupId": group_id, "InstanceIds": instance_ids}
    return call_json(clients_for(region).autoscaling, "RemoveInstances", request)["ActivityId"]


@task(name="attach-instances", cache_policy=NO_CACHE)
@retrying()
def attach_instances(region: str, group_id: str, instance_ids: list[str]) -> str:
    """AttachInstances: its activity's id. Servers already in the group were attached by an earlier attempt whose
    answer was lost: that attach's activity is answered, not a second attach (refused: already in the group)."""
    if set(instance_ids) <= {m.instance_id for m in members(region, group_id)}:
        earlier = wait_until(  # the activity may be listed a little after its servers (eventual consistency)
            lambda: next((a for a in activities(region, group_id)
                          if a.type == "ATTACH_INSTANCES" and set(instance_ids) <= set(a.instances)), None),
            done=lambda a: a is not None,
            failed=lambda _: None,
            what=f"the activity that attached {', '.join(instance_ids)} to {group_id}",
            timeout=60,
        )  # fmt: skip
        assert earlier is not None
        return earlier.activity_id
    answer = call_json(
        clients_for(region).autoscaling,
        "AttachInstances",
        {"AutoScalingGroupId": group_id, "InstanceIds": instance_ids},
    )
    return answer["ActivityId"]


@task(name="set-instances-protection", cache_policy=NO_CACHE)
@retrying()
def set_protection(region: str, group_id: str, instance_ids: list[str], protected: bool) -> None:
    request = {"AutoScalingGroupId": group_id, "InstanceIds": instance_ids, "ProtectedFromScaleIn": protected}
    call_json(clients_for(region).autoscaling, "SetInstancesProtection", request)


@task(name="modify-desired-capacity", cache_policy=NO_CACHE)
@retrying()
def modify_desired(region: str, group_id: str, desired: int, min_size: int | None = None) -> None:
    """ModifyDesiredCapacity; with `min_size`, the group's MinSize in the same write (the API takes both)."""

    def write() -> None:
        request: dict[str, Any] = {"AutoScalingGroupId": group_id, "DesiredCapacity": desired}
        if min_size is not None:
            request["MinSize"] = min_size
        call_json(clients_for(region).autoscaling, "ModifyDesiredCapacity", request)

    write_outlasting(("desired", region, group_id), desired, write)


# --- waits ----------------------------------------------------------------------------------------------------


@task(name="wait-activity", cache_policy=NO_CACHE)
def wait_activity(region: str, activity_id: str, timeout: float, poll: float = 2.0) -> Activity:
    """INIT / RUNNING -> SUCCESSFUL; FAILED, PARTIALLY_SUCCESSFUL or CANCELLED fail with the cloud's message.
    Not listed yet (right after the change) is "not yet"."""
    found = wait_until(
        lambda: describe_activity(region, activity_id),
        done=lambda a: a is not None and a.status == FINISHED_OK,
        failed=lambda a: a.failure() if a is not None else None,
        what=f"scaling activity {activity_id}",
        timeout=timeout,
        first_delay=min(poll, 0.2),
        max_delay=poll,
    )
    assert found is not None
    return found


@task(name="wait-group-activities", cache_policy=NO_CACHE)
def wait_new_activities(
    region: str,
    group_id: str,
    known: set[str],
    timeout: float,
    poll: float = 2.0,
    observe: GroupObserver | None = None,
) -> list[Activity]:
    """Activities the group starts after a change (ids not in `known`) until the group has settled; each must end
    SUCCESSFUL. Polls the group too: no new activity and a settled group means the change needed none. `observe`
    sees each poll's group and new activities (a report's capacity chart)."""

    def state() -> tuple[Group | None, list[Activity]]:
        group = describe_group(region, group_id)
        new = [a for a in activities(region, group_id) if a.activity_id not in known]
        if observe is not None:
            observe(group, new)
        return group, new

    def failed(s: tuple[Group | None, list[Activity]]) -> str | None:
        if s[0] is None:
            return f"scaling group {group_id} is gone"
        return next((f for a in s[1] if (f := a.failure())), None)

    def done(s: tuple[Group | None, list[Activity]]) -> bool:
        group, new = s
        return group is not None and group.settled and all(a.status == FINISHED_OK for a in new)

    _, new = wait_until(state, done, failed, f"the activities of {group_id}", timeout, min(poll, 0.2), poll)
    return new


def wait_idle(region: str, group_id: str, timeout: float, poll: float = 2.0) -> Group | None:
    """The group once no activity of it is under way (None: it is gone): RemoveInstances and DeleteAutoScalingGroup
    refuse a group in activity."""
    return wait_until(
        lambda: describe_group(region, group_id),
        done=lambda g: g is None or not g.in_activity,
        failed=lambda _: None,
        what=f"scaling group {group_id} to finish its activity",
        timeout=timeout,
        first_delay=min(poll, 0.2),
        max_delay=poll,
    )


@task(name="wait-group-settled", cache_policy=NO_CACHE)
def wait_settled(
    region: str, group_id: str, timeout: float, poll: float = 2.0, observe: GroupObserver | None = None
) -> Group:
    """NOT_IN_ACTIVITY with as many IN_SERVICE servers as it desires."""

    def state() -> Group | None:
        group = describe_group(region, group_id)
        if observe is not None:
            observe(group, [])
        return group

    group = wait_until(
        state,
        done=lambda g: g is not None and g.settled,
        failed=lambda g: f"scaling group {group_id} is gone" if g is None else None,
        what=f"scaling group {group_id} to settle at its desired capacity",
        timeout=timeout,
        first_delay=min(poll, 0.2),
        max_delay=poll,
    )
    assert group is not None
    return group
