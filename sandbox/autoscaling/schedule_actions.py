"""as 2018-04-19 actions: scheduled actions."""

from typing import Any

from sandbox.autoscaling.common import VERSION, describe
from sandbox.autoscaling.group_actions import backend_of
from sandbox.autoscaling.models import ScheduledAction
from sandbox.core.registry import Request, action


def scheduled_view(a: ScheduledAction) -> dict[str, Any]:
    return {
        "ScheduledActionId": a.scheduled_action_id,
        "ScheduledActionName": a.name,
        "AutoScalingGroupId": a.group_id,
        "StartTime": a.start_time,
        "Recurrence": a.recurrence,
        "EndTime": a.end_time,
        "MaxSize": a.max_size,
        "DesiredCapacity": a.desired,
        "MinSize": a.min_size,
        "CreatedTime": a.created_time,
        "ScheduledType": "CRONTAB" if a.recurrence else "ONCE",
        "DisableUpdateDesiredCapacity": a.disable_update_desired,
    }


@action("as", VERSION, "CreateScheduledAction")
def create_scheduled_action(req: Request) -> dict[str, Any]:
    return {"ScheduledActionId": backend_of(req).create_scheduled_action(req.region, req.params).scheduled_action_id}


@action("as", VERSION, "DescribeScheduledActions")
def describe_scheduled_actions(req: Request) -> dict[str, Any]:
    total, page = describe(
        backend_of(req).scheduled_actions(req.region),
        req.get("ScheduledActionIds"),
        lambda a: a.scheduled_action_id,
        req.get("Filters"),
        {
            "scheduled-action-id": lambda a: a.scheduled_action_id,
            "scheduled-action-name": lambda a: a.name,
            "auto-scaling-group-id": lambda a: a.group_id,
        },
        req.get("Offset"),
        req.get("Limit"),
    )
    return {"TotalCount": total, "ScheduledActionSet": [scheduled_view(a) for a in page]}


@action("as", VERSION, "ModifyScheduledAction")
def modify_scheduled_action(req: Request) -> dict[str, Any]:
    backend_of(req).modify_scheduled_action(req.region, req.params)
    return {}


@action("as", VERSION, "DeleteScheduledAction")
def delete_scheduled_action(req: Request) -> dict[str, Any]:
    backend_of(req).delete_scheduled_action(req.region, req.params["ScheduledActionId"])
    return {}
