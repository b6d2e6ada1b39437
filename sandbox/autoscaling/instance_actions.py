"""as 2018-04-19 actions: group membership (scale out / in, attach, detach, remove, protection), the group's
instances and its scaling activities."""

from datetime import datetime
from typing import Any

from sandbox.autoscaling.activities import related_status
from sandbox.autoscaling.common import VERSION, clb_of, cvm_of, describe
from sandbox.autoscaling.group_actions import backend_of
from sandbox.autoscaling.models import Activity, AutoScalingGroup, GroupInstance
from sandbox.core.errors import ApiError
from sandbox.core.registry import Request, action


@action("as", VERSION, "ScaleOutInstances")
def scale_out_instances(req: Request) -> dict[str, Any]:
    p = req.params
    return {
        "ActivityId": backend_of(req).scale_out(req.region, p["AutoScalingGroupId"], p["ScaleOutNumber"]).activity_id
    }


@action("as", VERSION, "ScaleInInstances")
def scale_in_instances(req: Request) -> dict[str, Any]:
    p = req.params
    return {"ActivityId": backend_of(req).scale_in(req.region, p["AutoScalingGroupId"], p["ScaleInNumber"]).activity_id}


@action("as", VERSION, "AttachInstances")
def attach_instances(req: Request) -> dict[str, Any]:
    p = req.params
    return {"ActivityId": backend_of(req).attach(req.region, p["AutoScalingGroupId"], p["InstanceIds"]).activity_id}


@action("as", VERSION, "DetachInstances")
def detach_instances(req: Request) -> dict[str, Any]:
    p = req.params
    activity = backend_of(req).detach(req.region, p["AutoScalingGroupId"], p["InstanceIds"], remove=False)
    return {"ActivityId": activity.activity_id}


@action("as", VERSION, "RemoveInstances")
def remove_instances(req: Request) -> dict[str, Any]:
    p = req.params
    activity = backend_of(req).detach(req.region, p["AutoScalingGroupId"], p["InstanceIds"], remove=True)
    return {"ActivityId": activity.activity_id}


@action("as", VERSION, "SetInstancesProtection")
def set_instances_protection(req: Request) -> dict[str, Any]:
    p = req.params
    backend_of(req).set_protection(req.region, p["AutoScalingGroupId"], p["InstanceIds"], p["ProtectedFromScaleIn"])
    return {}


def health_status(req: Request, member: GroupInstance, group: AutoScalingGroup) -> str:
    """UNHEALTHY when the server is not RUNNING; with HealthCheckType CLB, CLB_UNHEALTHY when a listener of the
    group finds it unhealthy (the data plane's health checks)."""
    instance = cvm_of(req.cloud).state.instances.get(member.instance_id)
    if instance is None or instance.state != "RUNNING":
        return "UNHEALTHY"
    if group.health_check_type == "CLB" and member.life_cycle_state == "IN_SERVICE":
        for lb, listener, target in clb_of(req.cloud).targets_of_instance(member.instance_id):
            ours = any(
                f.load_balancer_id == lb.load_balancer_id and f.listener_id == listener.listener_id
                for f in group.forward_lbs
            )
            if ours and target.healthy is False:
                return "CLB_UNHEALTHY"
    return "HEALTHY"


def instance_view(member: GroupInstance, group_name: str, lc_name: str, health: str) -> dict[str, Any]:
    return {
        "InstanceId": member.instance_id,
        "AutoScalingGroupId": member.group_id,
        "LaunchConfigurationId": member.launch_configuration_id,
        "LaunchConfigurationName": lc_name,
        "LifeCycleState": member.life_cycle_state,
        "HealthStatus": health,
        "ProtectedFromScaleIn": member.protected,
        "Zone": member.zone,
        "CreationType": member.creation_type,
        "AddTime": member.add_time,
        "InstanceType": member.instance_type,
        "VersionNumber": member.version_number,
        "AutoScalingGroupName": group_name,
        "WarmupStatus": "NO_NEED_WARMUP",
        "DisasterRecoverGroupIds": [],
    }


@action("as", VERSION, "DescribeAutoScalingInstances")
def describe_auto_scaling_instances(req: Request) -> dict[str, Any]:
    backend = backend_of(req)
    members = [
        (m, g) for g in sorted(backend.groups(req.region), key=lambda g: g.created_at) for m in g.instances.values()
    ]
    servers = cvm_of(req.cloud).state.instances
    total, page = describe(
        members,
        req.get("InstanceIds"),
        lambda pair: pair[0].instance_id,
        req.get("Filters"),
        {
            "instance-id": lambda pair: pair[0].instance_id,
            "auto-scaling-group-id": lambda pair: pair[1].group_id,
            "private-ip-address": lambda pair: getattr(servers.get(pair[0].instance_id), "private_ip", None),
        },
        req.get("Offset"),
        req.get("Limit"),
    )
    lcs = backend.state.launch_configurations
    views = []
    for member, group in page:
        lc = lcs.get(member.launch_configuration_id)
        views.append(instance_view(member, group.name, lc.name if lc else "", health_status(req, member, group)))
    return {"TotalCount": total, "AutoScalingInstanceSet": views}


def activity_view(activity: Activity) -> dict[str, Any]:
    related = [
        {"InstanceId": w.instance_id, "InstanceStatus": related_status(w, activity)}
        for w in activity.work
        if w.instance_id
    ]
    return {
        "AutoScalingGroupId": activity.group_id,
        "ActivityId": activity.activity_id,
        "ActivityType": activity.activity_type,
        "StatusCode": activity.status_code,
        "StatusMessage": activity.status_message,
        "Cause": activity.cause,
        "Description": activity.description,
        "StartTime": activity.start_time or activity.created_time,
        "EndTime": activity.end_time or None,
        "CreatedTime": activity.created_time,
        "ActivityRelatedInstanceSet": related,
        "StatusMessageSimplified": activity.status_message_simplified,
        "LifecycleActionResultSet": [],
        "DetailedStatusMessageSet": list(activity.detailed),
        "InvocationResultSet": [],
        "RelatedInstanceSet": related,
    }


def _window(text: str | None, member: str) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError("InvalidParameterValue.TimeFormat", f"`{member}` `{text}` is not an ISO 8601 time.") from None


@action("as", VERSION, "DescribeAutoScalingActivities")
def describe_auto_scaling_activities(req: Request) -> dict[str, Any]:
    backend = backend_of(req)
    start, end = _window(req.get("StartTime"), "StartTime"), _window(req.get("EndTime"), "EndTime")
    # Eventual consistency, as on the real service: a new activity is listed only after a moment (realistic
    # profile; at once in the instant one). Its ActivityId is returned at once all the same.
    visible = req.cloud.clock.now() - req.cloud.clock.delay("as.activity.visible")
    activities = [
        a
        for a in backend.state.activities.values()
        if a.region == req.region
        and a.created_at <= visible
        and (start is None or a.created_at >= start)
        and (end is None or a.created_at <= end)
    ]
    activities.sort(key=lambda a: a.created_at, reverse=True)  # newest first, as the real API lists them
    total, page = describe(
        activities,
        req.get("ActivityIds"),
        lambda a: a.activity_id,
        req.get("Filters"),
        {
            "auto-scaling-group-id": lambda a: a.group_id,
            "activity-status-code": lambda a: a.status_code,
            "activity-type": lambda a: a.activity_type,
            "activity-id": lambda a: a.activity_id,
        },
        req.get("Offset"),
        req.get("Limit"),
    )
    return {"TotalCount": total, "ActivitySet": [activity_view(a) for a in page]}
