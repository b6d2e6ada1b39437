"""Scaling policies through the real SDK: SIMPLE alarm policies and target tracking over the sandbox's
per-server metrics (pinned through `POST /_sandbox/metrics`, or derived from the requests the apps serve)."""

from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.sandbox.as_world import World, error_of, seed_guide, shape_errors
from tests.sdk import poll

ALARM = {
    "ComparisonOperator": "GREATER_THAN",
    "MetricName": "CPU_UTILIZATION",
    "Threshold": 70,
    "Period": 60,
    "ContinuousTime": 2,
    "Statistic": "AVERAGE",
}


@pytest.fixture
def world(client: Any, sandbox: Any) -> World:
    return World(client, sandbox)


def simple_policy(world: World, group_id: str, name: str = "cpu-out", **extra: Any) -> str:
    params = {
        "AutoScalingGroupId": group_id,
        "ScalingPolicyName": name,
        "AdjustmentType": "CHANGE_IN_CAPACITY",
        "AdjustmentValue": 1,
        "MetricAlarm": ALARM,
        "Cooldown": 300,
        **extra,
    }
    return world.a("CreateScalingPolicy", **params).AutoScalingPolicyId


def pin_cpu(sandbox: Any, group_id: str, value: float | None) -> None:
    sandbox.admin("POST", "metrics", {"auto_scaling_group_id": group_id, "metric": "CPU_UTILIZATION", "value": value})


def minutes(sandbox: Any, n: float) -> None:
    sandbox.admin("POST", "clock", {"advance": 60 * n})


def test_policy_lifecycle(world: World) -> None:
    group_id = world.group(world.launch_configuration())
    policy_id = simple_policy(world, group_id)
    policy = world.a("DescribeScalingPolicies", AutoScalingPolicyIds=[policy_id]).ScalingPolicySet[0]
    assert (policy.ScalingPolicyType, policy.AdjustmentType, policy.AdjustmentValue, policy.Cooldown) == (
        "SIMPLE",
        "CHANGE_IN_CAPACITY",
        1,
        300,
    )
    assert (policy.MetricAlarm.MetricName, policy.MetricAlarm.Threshold, policy.MetricAlarm.ContinuousTime) == (
        "CPU_UTILIZATION",
        70,
        2,
    )
    world.a("ModifyScalingPolicy", AutoScalingPolicyId=policy_id, AdjustmentValue=2, ScalingPolicyName="cpu-out-2")
    by_group = [{"Name": "auto-scaling-group-id", "Values": [group_id]}]
    [policy] = world.a("DescribeScalingPolicies", Filters=by_group).ScalingPolicySet
    assert (policy.ScalingPolicyName, policy.AdjustmentValue) == ("cpu-out-2", 2)
    assert (
        shape_errors("DescribeScalingPolicies", world.autoscaling.call_json("DescribeScalingPolicies", {})["Response"])
        == []
    )
    world.a("DeleteScalingPolicy", AutoScalingPolicyId=policy_id)
    error = error_of(lambda: world.a("DeleteScalingPolicy", AutoScalingPolicyId=policy_id))
    assert error.code == "ResourceNotFound.ScalingPolicyNotFound"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"MetricAlarm": {**ALARM, "Threshold": 120}}, "InvalidParameterValue.ThresholdOutOfRange"),
        ({"MetricAlarm": {**ALARM, "Period": 30}}, "InvalidParameterValue"),
        ({"MetricAlarm": {**ALARM, "ContinuousTime": 11}}, "InvalidParameterValue.Range"),
        ({"MetricAlarm": {**ALARM, "ComparisonOperator": "ABOVE"}}, "InvalidParameterValue"),
        ({"AdjustmentType": "DOUBLE"}, "InvalidParameterValue"),
        ({"TargetValue": 50}, "InvalidParameter.InScenario"),
        ({"AutoScalingGroupId": "asg-00000000"}, "ResourceNotFound.AutoScalingGroupNotFound"),
    ],
)
def test_policy_errors(world: World, extra: dict[str, Any], code: str) -> None:
    group_id = world.group(world.launch_configuration())
    assert error_of(lambda: simple_policy(world, group_id, **extra)).code == code


def test_policy_names_are_unique_and_simple_ones_need_an_alarm(world: World) -> None:
    group_id = world.group(world.launch_configuration())
    simple_policy(world, group_id, "cpu-out")
    assert error_of(lambda: simple_policy(world, group_id, "cpu-out")).code == (
        "InvalidParameterValue.ScalingPolicyNameDuplicate"
    )
    error = error_of(
        lambda: world.a(
            "CreateScalingPolicy",
            AutoScalingGroupId=group_id,
            ScalingPolicyName="x",
            AdjustmentType="CHANGE_IN_CAPACITY",
            AdjustmentValue=1,
        )
    )
    assert error.code == "MissingParameter.InScenario"


def test_execute_policy(world: World, sandbox: Any) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=1)
    world.settle(group_id)
    policy_id = simple_policy(world, group_id)
    activity_id = world.a("ExecuteScalingPolicy", AutoScalingPolicyId=policy_id).ActivityId
    group = world.settle(group_id)
    assert group.DesiredCapacity == 2
    activity = world.a("DescribeAutoScalingActivities", ActivityIds=[activity_id]).ActivitySet[0]
    assert (activity.ActivityType, activity.StatusCode) == ("SCALE_OUT", "SUCCESSFUL") and policy_id in activity.Cause
    error = error_of(lambda: world.a("ExecuteScalingPolicy", AutoScalingPolicyId=policy_id, HonorCooldown=True))
    assert error.code == "FailedOperation.NoActivityToGenerate"  # still in the policy's 300 s cooldown
    tracking = world.a(
        "CreateScalingPolicy",
        AutoScalingGroupId=group_id,
        ScalingPolicyName="track",
        ScalingPolicyType="TARGET_TRACKING",
        PredefinedMetricType="ASG_AVG_CPU_UTILIZATION",
        TargetValue=50,
    ).AutoScalingPolicyId
    error = error_of(lambda: world.a("ExecuteScalingPolicy", AutoScalingPolicyId=tracking))
    assert error.code == "InvalidParameterValue.TargetTrackingScalingPolicy"


def test_alarm_scales_out_after_continuous_periods_then_cools_down(world: World, sandbox: Any) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=1)
    world.settle(group_id)
    simple_policy(world, group_id)  # CPU > 70 for 2 periods of 60 s: +1, cooldown 300 s
    pin_cpu(sandbox, group_id, 90)
    minutes(sandbox, 1.1)
    assert world.idle(group_id).DesiredCapacity == 1  # one breaching period is not enough
    minutes(sandbox, 1)
    group = world.settle(group_id)
    assert group.DesiredCapacity == 2
    cause = world.activities(group_id)[0].Cause
    assert "cpu-out" in cause and "CPU_UTILIZATION" in cause
    pin_cpu(sandbox, group_id, 95)  # both servers now
    minutes(sandbox, 2)
    assert world.idle(group_id).DesiredCapacity == 2  # the alarm holds, but the group is in its cooldown
    minutes(sandbox, 4.5)  # the cooldown ends 300 s after the firing: the next period's end fires again
    assert world.settle(group_id).DesiredCapacity == 3  # fired at the first period after the cooldown


def test_alarm_below_threshold_does_nothing_and_scale_in_policy(world: World, sandbox: Any) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=2)
    world.settle(group_id)
    low = {**ALARM, "ComparisonOperator": "LESS_THAN", "Threshold": 20}
    simple_policy(world, group_id, "cpu-in", AdjustmentValue=-1, MetricAlarm=low)
    pin_cpu(sandbox, group_id, 50)
    minutes(sandbox, 3)
    assert world.idle(group_id).DesiredCapacity == 2
    pin_cpu(sandbox, group_id, 5)
    minutes(sandbox, 2.1)
    assert world.settle(group_id).DesiredCapacity == 1


def test_target_tracking(world: World, sandbox: Any) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=2)
    world.settle(group_id)
    world.a(
        "CreateScalingPolicy",
        AutoScalingGroupId=group_id,
        ScalingPolicyName="track",
        ScalingPolicyType="TARGET_TRACKING",
        PredefinedMetricType="ASG_AVG_CPU_UTILIZATION",
        TargetValue=50,
        EstimatedInstanceWarmup=60,
    )
    pin_cpu(sandbox, group_id, 90)
    minutes(sandbox, 2.1)
    assert world.idle(group_id).DesiredCapacity == 2  # 2 minutes above: not yet
    minutes(sandbox, 1)
    assert world.settle(group_id).DesiredCapacity == 4  # ceil(2 x 90 / 50)
    pin_cpu(sandbox, group_id, 10)  # all four, below 80 % of the target
    minutes(sandbox, 14.1)
    assert world.idle(group_id).DesiredCapacity == 4
    minutes(sandbox, 1)
    assert world.settle(group_id).DesiredCapacity == 1  # ceil(4 x 10 / 50)


def test_metrics_count_the_requests_an_app_serves(sandbox: Any) -> None:
    seed = seed_guide(sandbox)
    server = seed["business_server"]  # its group admits the app's port from anywhere
    port = seed["ports"]["map"][str(seed["ports"]["business"])]
    url = f"http://{server['private_ip']}:{port}/"
    poll(lambda: httpx.get(url, timeout=5).status_code < 500, what="the business app up", timeout=20)
    # The requests one second into a minute of sandbox time, so they all fall in it, and in the last whole minute
    # after the jump below (sent just before a minute's end, some fell in the next one and the CPU read idle).
    now = datetime.fromisoformat(sandbox.admin("GET", "clock")["now"])
    sandbox.admin("POST", "clock", {"advance": 61 - now.second})  # `now` is to the second
    before = sandbox.admin("GET", "metrics")["servers"][server["instance_id"]]["requests"]
    for _ in range(30):
        httpx.get(url, timeout=5)
    after = sandbox.admin("GET", "metrics")["servers"][server["instance_id"]]["requests"]
    assert after - before == 30
    minutes(sandbox, 1)  # the minute with the 30 requests is now the last whole one
    cpu = sandbox.admin("GET", "metrics")["servers"][server["instance_id"]]["CPU_UTILIZATION"]
    assert cpu > 1.0  # IDLE_CPU plus the requests' cost
