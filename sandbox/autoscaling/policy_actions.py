"""as 2018-04-19 actions: scaling policies."""

from typing import Any

from sandbox.autoscaling.common import VERSION, describe
from sandbox.autoscaling.group_actions import backend_of
from sandbox.autoscaling.models import ScalingPolicy
from sandbox.core.registry import Request, action


def alarm_view(policy: ScalingPolicy) -> dict[str, Any] | None:
    alarm = policy.metric_alarm
    if alarm is None:
        return None
    return {
        "ComparisonOperator": alarm.comparison_operator,
        "MetricName": alarm.metric_name,
        "Threshold": alarm.threshold,
        "Period": alarm.period,
        "ContinuousTime": alarm.continuous_time,
        "Statistic": alarm.statistic,
        "PreciseThreshold": alarm.precise_threshold if alarm.precise_threshold is not None else float(alarm.threshold),
    }


def policy_view(policy: ScalingPolicy) -> dict[str, Any]:
    alarm = alarm_view(policy)
    return {
        "AutoScalingGroupId": policy.group_id,
        "AutoScalingPolicyId": policy.policy_id,
        "ScalingPolicyType": policy.policy_type,
        "ScalingPolicyName": policy.name,
        "AdjustmentType": policy.adjustment_type,
        "AdjustmentValue": policy.adjustment_value,
        "Cooldown": policy.cooldown,
        "MetricAlarm": alarm,
        "PredefinedMetricType": policy.predefined_metric_type,
        "TargetValue": policy.target_value,
        "EstimatedInstanceWarmup": policy.estimated_instance_warmup,
        "DisableScaleIn": policy.disable_scale_in,
        "MetricAlarms": [alarm] if alarm else None,
        "NotificationUserGroupIds": list(policy.notification_user_group_ids),
    }


@action("as", VERSION, "CreateScalingPolicy")
def create_scaling_policy(req: Request) -> dict[str, Any]:
    return {"AutoScalingPolicyId": backend_of(req).create_policy(req.region, req.params).policy_id}


@action("as", VERSION, "DescribeScalingPolicies")
def describe_scaling_policies(req: Request) -> dict[str, Any]:
    total, page = describe(
        backend_of(req).policies(req.region),
        req.get("AutoScalingPolicyIds"),
        lambda p: p.policy_id,
        req.get("Filters"),
        {
            "auto-scaling-policy-id": lambda p: p.policy_id,
            "auto-scaling-group-id": lambda p: p.group_id,
            "scaling-policy-name": lambda p: p.name,
            "scaling-policy-type": lambda p: p.policy_type,
        },
        req.get("Offset"),
        req.get("Limit"),
    )
    return {"TotalCount": total, "ScalingPolicySet": [policy_view(p) for p in page]}


@action("as", VERSION, "ModifyScalingPolicy")
def modify_scaling_policy(req: Request) -> dict[str, Any]:
    backend_of(req).modify_policy(req.region, req.params)
    return {}


@action("as", VERSION, "DeleteScalingPolicy")
def delete_scaling_policy(req: Request) -> dict[str, Any]:
    backend_of(req).delete_policy(req.region, req.params["AutoScalingPolicyId"])
    return {}


@action("as", VERSION, "ExecuteScalingPolicy")
def execute_scaling_policy(req: Request) -> dict[str, Any]:
    p = req.params
    activity = backend_of(req).execute_policy(req.region, p["AutoScalingPolicyId"], bool(p.get("HonorCooldown")))
    return {"ActivityId": activity.activity_id}
