"""The Auto Scaling engine through the real SDK: desired capacity reconciled with real servers registered on the
group's CLB listener, scale-in by the termination policy, activities and their texts, launch failures."""

from typing import Any

import pytest
from tencentcloud.vpc.v20170312 import models as vpc_models

from tests.sandbox.as_world import World, call, error_of, shape_errors
from tests.sdk import poll


@pytest.fixture
def world(client: Any, sandbox: Any) -> World:
    return World(client, sandbox)


def test_desired_0_to_2_launches_two_running_servers_registered_on_the_listener(world: World) -> None:
    forward = world.listener()
    lc_id = world.launch_configuration(InstanceNameSettings={"InstanceName": "web"})
    group_id = world.group(lc_id, forward=forward)
    world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=2)
    group = world.settle(group_id)
    assert (group.InstanceCount, group.InServiceInstanceCount) == (2, 2)
    members = world.instances(group_id)
    ids = sorted(m.InstanceId for m in members)
    assert {(m.LifeCycleState, m.CreationType, m.HealthStatus, m.ProtectedFromScaleIn) for m in members} == {
        ("IN_SERVICE", "AUTO_CREATION", "HEALTHY", False)
    }
    servers = world.cvm("DescribeInstances", InstanceIds=ids).InstanceSet
    subnet = world.subnet()
    assert {(s.InstanceState, s.InstanceType, s.InstanceName, s.VirtualPrivateCloud.SubnetId) for s in servers} == {
        ("RUNNING", "S5.MEDIUM2", "web", subnet.SubnetId)
    }
    assert world.targets(*forward) == [(i, 80, 10) for i in ids]
    [activity] = world.activities(group_id)
    assert (activity.ActivityType, activity.StatusCode, activity.StatusMessage) == (
        "SCALE_OUT",
        "SUCCESSFUL",
        "Success",
    )
    assert activity.Cause == (
        "Activity was launched in response to a difference between desired capacity and actual capacity."
    )
    assert activity.Description == (
        "Activity was launched in response to a difference between desired capacity and actual capacity, "
        "scale out 2 instance(s)."
    )
    assert sorted((r.InstanceId, r.InstanceStatus) for r in activity.RelatedInstanceSet) == [
        (i, "SUCCESSFUL") for i in ids
    ]
    assert activity.StartTime.endswith("Z") and activity.EndTime.endswith("Z")


def test_group_created_with_desired_capacity_launches_at_once(world: World) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=1, MinSize=1)
    world.settle(group_id)
    [member] = world.instances(group_id)
    assert world.cvm_states([member.InstanceId]) == {member.InstanceId: "RUNNING"}


def test_scale_in_follows_the_termination_policy_and_skips_protected(world: World, sandbox: Any) -> None:
    forward = world.listener()
    group_id = world.group(world.launch_configuration(), forward=forward)
    for desired in (1, 2, 3):  # one at a time, a minute apart: three distinct AddTimes
        world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=desired)
        world.settle(group_id)
        sandbox.admin("POST", "clock", {"advance": 60})
    by_age = [m.InstanceId for m in sorted(world.instances(group_id), key=lambda m: (m.AddTime, m.InstanceId))]
    oldest = by_age[0]
    world.a("SetInstancesProtection", AutoScalingGroupId=group_id, InstanceIds=[oldest], ProtectedFromScaleIn=True)
    world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=2)
    world.settle(group_id)
    remaining = {m.InstanceId for m in world.instances(group_id)}
    assert oldest in remaining and len(remaining) == 2
    gone = (set(by_age) - remaining).pop()
    poll(lambda: gone not in world.cvm_states([gone]), what="the scaled-in server terminated")
    assert {t[0] for t in world.targets(*forward)} == remaining
    latest = world.activities(group_id)[0]
    assert (latest.ActivityType, latest.StatusCode) == ("SCALE_IN", "SUCCESSFUL")
    assert latest.Description.endswith("scale in 1 instance(s).")


def test_newest_instance_policy(world: World, sandbox: Any) -> None:
    group_id = world.group(world.launch_configuration(), TerminationPolicies=["NEWEST_INSTANCE"])
    for desired in (1, 2):
        world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=desired)
        world.settle(group_id)
        sandbox.admin("POST", "clock", {"advance": 60})
    first = world.instances(group_id)
    oldest = min(first, key=lambda m: (m.AddTime, m.InstanceId)).InstanceId
    world.a("ScaleInInstances", AutoScalingGroupId=group_id, ScaleInNumber=1)
    world.settle(group_id)
    assert [m.InstanceId for m in world.instances(group_id)] == [oldest]


def test_scale_out_and_in_by_number(world: World) -> None:
    group_id = world.group(world.launch_configuration(), MaxSize=3)
    activity_id = world.a("ScaleOutInstances", AutoScalingGroupId=group_id, ScaleOutNumber=2).ActivityId
    assert activity_id.startswith("asa-")
    assert world.settle(group_id).DesiredCapacity == 2
    error = error_of(lambda: world.a("ScaleOutInstances", AutoScalingGroupId=group_id, ScaleOutNumber=2))
    assert error.code == "ResourceInsufficient.AutoScalingGroupAboveMaxSize"
    error = error_of(lambda: world.a("ScaleInInstances", AutoScalingGroupId=group_id, ScaleInNumber=3))
    assert error.code == "ResourceInsufficient.AutoScalingGroupBelowMinSize"
    error = error_of(lambda: world.a("DeleteAutoScalingGroup", AutoScalingGroupId=group_id))
    assert error.code == "ResourceInUse.InstanceInGroup"
    world.a("ScaleInInstances", AutoScalingGroupId=group_id, ScaleInNumber=2)
    assert world.settle(group_id).InstanceCount == 0
    world.a("DeleteAutoScalingGroup", AutoScalingGroupId=group_id)


def test_activity_in_progress_is_seen_with_a_realistic_clock(world: World, sandbox: Any) -> None:
    # launches take 3 s; a new activity is listed after 0.2 s
    sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.1})
    group_id = world.group(world.launch_configuration())
    activity_id = world.a("ScaleOutInstances", AutoScalingGroupId=group_id, ScaleOutNumber=1).ActivityId
    # the newest activity is invisible for a moment (eventual consistency): a client must poll, never index
    assert world.a("DescribeAutoScalingActivities", ActivityIds=[activity_id]).ActivitySet == []
    assert world.describe_group(group_id).InActivityStatus == "IN_ACTIVITY"
    error = error_of(lambda: world.a("ScaleInInstances", AutoScalingGroupId=group_id, ScaleInNumber=1))
    assert error.code == "ResourceUnavailable.AutoScalingGroupInActivity"
    error = error_of(lambda: world.a("DeleteAutoScalingGroup", AutoScalingGroupId=group_id))
    assert error.code == "ResourceInUse.ActivityInProgress"
    running = poll(lambda: world.a("DescribeAutoScalingActivities", ActivityIds=[activity_id]).ActivitySet)
    assert running[0].StatusCode in ("INIT", "RUNNING")
    world.settle(group_id, timeout=20)
    done = world.a("DescribeAutoScalingActivities", ActivityIds=[activity_id]).ActivitySet[0]
    assert done.StatusCode == "SUCCESSFUL"


def test_launch_failure_fails_the_activity_and_no_retry_waits(world: World, sandbox: Any) -> None:
    sandbox.admin(
        "POST", "faults", {"service": "cvm", "action": "RunInstances", "async_failure": "no stock", "count": 1}
    )
    group_id = world.group(world.launch_configuration(), RetryPolicy="NO_RETRY")
    world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=1)
    failed = poll(lambda: [a for a in world.activities(group_id) if a.StatusCode == "FAILED"], what="a failed activity")
    assert "no stock" in failed[0].StatusMessage and failed[0].StatusMessageSimplified
    group = world.idle(group_id)
    assert (group.InstanceCount, group.DesiredCapacity) == (0, 1)
    assert len(world.activities(group_id)) == 1  # NO_RETRY: nothing until the next call
    world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=2)
    assert world.settle(group_id).InServiceInstanceCount == 2


def test_partial_failure_and_immediate_retry(world: World, sandbox: Any) -> None:
    group_id = world.group(
        world.launch_configuration(), MultiZoneSubnetPolicy="EQUALITY", SubnetIds=[world.subnet().SubnetId]
    )
    sandbox.admin(
        "POST",
        "faults",
        {
            "service": "cvm",
            "action": "RunInstances",
            "error_code": "ResourceInsufficient",
            "error_message": "sold out",
            "count": 1,
        },
    )
    world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=2)
    group = world.settle(group_id)  # IMMEDIATE_RETRY: the next activity launches what the first could not
    assert group.InServiceInstanceCount == 2
    activities = world.activities(group_id)
    assert [a.StatusCode for a in activities][-1] == "FAILED"
    assert activities[-1].DetailedStatusMessageSet[0].Code == "ResourceInsufficient"
    assert activities[0].StatusCode == "SUCCESSFUL"


def test_server_terminated_outside_is_replaced(world: World) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=1, MinSize=1)
    [member] = [m.InstanceId for m in world.settle(group_id) and world.instances(group_id)]
    world.cvm("TerminateInstances", InstanceIds=[member])
    poll(lambda: any(a.ActivityType == "TERMINATE_INSTANCES_UNEXPECTEDLY" for a in world.activities(group_id)))
    world.settle(group_id)
    [replacement] = world.instances(group_id)
    assert replacement.InstanceId != member


def test_answers_have_the_shapes_tencent_declares(world: World) -> None:
    forward = world.listener()
    group_id = world.group(world.launch_configuration(), forward=forward, DesiredCapacity=1)
    world.settle(group_id)
    for action in (
        "DescribeLaunchConfigurations",
        "DescribeAutoScalingGroups",
        "DescribeAutoScalingInstances",
        "DescribeAutoScalingActivities",
    ):
        answer = world.autoscaling.call_json(action, {})["Response"]
        assert shape_errors(action, answer) == []


def test_one_zone_failing_makes_the_activity_partially_successful(world: World, sandbox: Any) -> None:
    subnets = call(world.vpc_client, vpc_models, "DescribeSubnets", {}).SubnetSet
    defaults = sorted((s for s in subnets if s.IsDefault and s.VpcId == world.subnet().VpcId), key=lambda s: s.Zone)
    group_id = world.group(
        world.launch_configuration(),
        MultiZoneSubnetPolicy="EQUALITY",
        RetryPolicy="NO_RETRY",
        SubnetIds=[s.SubnetId for s in defaults],
    )
    # one RunInstances per subnet: the first launch ends LAUNCH_FAILED, the other zone's servers run
    sandbox.admin(
        "POST", "faults", {"service": "cvm", "action": "RunInstances", "async_failure": "zone sold out", "count": 1}
    )
    world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=2)
    group = world.idle(group_id)
    [activity] = world.activities(group_id)
    assert (activity.StatusCode, group.InServiceInstanceCount, group.DesiredCapacity) == ("PARTIALLY_SUCCESSFUL", 1, 2)
    assert "zone sold out" in activity.StatusMessage
    assert sorted(r.InstanceStatus for r in activity.RelatedInstanceSet) == ["FAILED", "SUCCESSFUL"]
    failed = next(r.InstanceId for r in activity.RelatedInstanceSet if r.InstanceStatus == "FAILED")
    poll(lambda: failed not in world.cvm_states([failed]), what="the failed launch cleaned up")


def test_health_status_follows_the_server_and_the_clb_health_checks(world: World) -> None:
    forward = world.listener()
    group_id = world.group(world.launch_configuration(), forward=forward, DesiredCapacity=1, HealthCheckType="CLB")
    world.settle(group_id)
    # the public image runs no app on port 80: the listener's health check fails, as the data plane measures it
    poll(lambda: world.instances(group_id)[0].HealthStatus == "CLB_UNHEALTHY", what="CLB_UNHEALTHY", timeout=15)
    world.a("ModifyAutoScalingGroup", AutoScalingGroupId=group_id, HealthCheckType="CVM")
    [member] = world.instances(group_id)
    assert member.HealthStatus == "HEALTHY"
    world.cvm("StopInstances", InstanceIds=[member.InstanceId])
    poll(lambda: world.instances(group_id)[0].HealthStatus == "UNHEALTHY", what="UNHEALTHY once stopped")


def test_incremental_intervals_retry_after_a_minute_of_sandbox_time(world: World, sandbox: Any) -> None:
    sandbox.admin(
        "POST", "faults", {"service": "cvm", "action": "RunInstances", "async_failure": "no stock", "count": 1}
    )
    group_id = world.group(world.launch_configuration(), RetryPolicy="INCREMENTAL_INTERVALS", DesiredCapacity=1)
    poll(lambda: [a.StatusCode for a in world.activities(group_id)] == ["FAILED"], what="the first launch failed")
    assert world.idle(group_id).InstanceCount == 0  # no retry before the interval
    sandbox.admin("POST", "clock", {"advance": 61})
    assert world.settle(group_id).InServiceInstanceCount == 1
    assert [a.StatusCode for a in world.activities(group_id)] == ["SUCCESSFUL", "FAILED"]
