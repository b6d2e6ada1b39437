"""Group membership by hand, through the real SDK: AttachInstances, DetachInstances, RemoveInstances,
SetInstancesProtection, and the errors the real API answers."""

from typing import Any

import pytest
from tencentcloud.vpc.v20170312 import models as vpc_models

from tests.sandbox.as_world import IMAGE, ZONE, World, call, error_of
from tests.sdk import poll


@pytest.fixture
def world(client: Any, sandbox: Any) -> World:
    return World(client, sandbox)


def run_servers(world: World, count: int, subnet: Any | None = None) -> list[str]:
    subnet = subnet or world.subnet()
    params = {
        "Placement": {"Zone": ZONE},
        "ImageId": IMAGE,
        "InstanceType": "S5.SMALL1",
        "InstanceCount": count,
        "VirtualPrivateCloud": {"VpcId": subnet.VpcId, "SubnetId": subnet.SubnetId},
    }
    ids = world.cvm("RunInstances", **params).InstanceIdSet
    poll(lambda: set(world.cvm_states(ids).values()) == {"RUNNING"}, what="servers RUNNING")
    return ids


def test_attach_raises_desired_and_registers_on_the_listener(world: World) -> None:
    forward = world.listener()
    group_id = world.group(world.launch_configuration(), forward=forward)
    existing = run_servers(world, 2)
    activity_id = world.a("AttachInstances", AutoScalingGroupId=group_id, InstanceIds=existing).ActivityId
    group = world.settle(group_id)
    assert (group.DesiredCapacity, group.InstanceCount) == (2, 2)
    assert {(m.InstanceId, m.CreationType, m.LifeCycleState) for m in world.instances(group_id)} == {
        (i, "MANUAL_ATTACHING", "IN_SERVICE") for i in existing
    }
    assert world.targets(*forward) == sorted((i, 80, 10) for i in existing)
    ip = world.cvm("DescribeInstances", InstanceIds=existing[:1]).InstanceSet[0].PrivateIpAddresses[0]
    by_ip = world.a("DescribeAutoScalingInstances", Filters=[{"Name": "private-ip-address", "Values": [ip]}])
    assert [m.InstanceId for m in by_ip.AutoScalingInstanceSet] == existing[:1]
    activity = world.a("DescribeAutoScalingActivities", ActivityIds=[activity_id]).ActivitySet[0]
    assert (activity.ActivityType, activity.StatusCode) == ("ATTACH_INSTANCES", "SUCCESSFUL")
    assert sorted(r.InstanceId for r in activity.RelatedInstanceSet) == sorted(existing)
    error = error_of(lambda: world.a("AttachInstances", AutoScalingGroupId=group_id, InstanceIds=existing[:1]))
    assert error.code == "ResourceUnavailable.InstancesAlreadyInAutoScalingGroup"


def test_attach_errors(world: World) -> None:
    group_id = world.group(world.launch_configuration(), MaxSize=1)
    missing = lambda: world.a("AttachInstances", AutoScalingGroupId=group_id, InstanceIds=["ins-00000000"])  # noqa: E731
    assert error_of(missing).code == "ResourceNotFound.InstancesNotFound"
    two = run_servers(world, 2)
    error = error_of(lambda: world.a("AttachInstances", AutoScalingGroupId=group_id, InstanceIds=two))
    assert error.code == "ResourceInsufficient.AutoScalingGroupAboveMaxSize"
    vpc = world.vpc_client
    other = call(vpc, vpc_models, "CreateVpc", {"VpcName": "other", "CidrBlock": "127.40.0.0/16"}).Vpc
    subnet = call(
        vpc,
        vpc_models,
        "CreateSubnet",
        {"VpcId": other.VpcId, "SubnetName": "other", "Zone": ZONE, "CidrBlock": "127.40.1.0/24"},
    ).Subnet
    [elsewhere] = run_servers(world, 1, subnet)
    error = error_of(lambda: world.a("AttachInstances", AutoScalingGroupId=group_id, InstanceIds=[elsewhere]))
    assert error.code == "ResourceUnavailable.CvmVpcInconsistent"


def test_detach_keeps_the_server_and_lowers_desired(world: World) -> None:
    forward = world.listener()
    group_id = world.group(world.launch_configuration(), forward=forward, DesiredCapacity=2)
    world.settle(group_id)
    first, second = sorted(m.InstanceId for m in world.instances(group_id))
    activity_id = world.a("DetachInstances", AutoScalingGroupId=group_id, InstanceIds=[first]).ActivityId
    group = world.settle(group_id)
    assert (group.DesiredCapacity, [m.InstanceId for m in world.instances(group_id)]) == (1, [second])
    assert world.cvm_states([first]) == {first: "RUNNING"}
    assert world.targets(*forward) == [(second, 80, 10)]
    activity = world.a("DescribeAutoScalingActivities", ActivityIds=[activity_id]).ActivitySet[0]
    assert (activity.ActivityType, activity.StatusCode) == ("DETACH_INSTANCES", "SUCCESSFUL")
    error = error_of(lambda: world.a("DetachInstances", AutoScalingGroupId=group_id, InstanceIds=[first]))
    assert error.code == "ResourceNotFound.InstancesNotInAutoScalingGroup"
    world.a("ModifyAutoScalingGroup", AutoScalingGroupId=group_id, MinSize=1)
    error = error_of(lambda: world.a("DetachInstances", AutoScalingGroupId=group_id, InstanceIds=[second]))
    assert error.code == "ResourceInsufficient.AutoScalingGroupBelowMinSize"


def test_remove_terminates_what_the_group_created_and_lets_attached_servers_go(world: World) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=1)
    world.settle(group_id)
    [created] = [m.InstanceId for m in world.instances(group_id)]
    [attached] = run_servers(world, 1)
    world.a("AttachInstances", AutoScalingGroupId=group_id, InstanceIds=[attached])
    world.settle(group_id)
    activity_id = world.a("RemoveInstances", AutoScalingGroupId=group_id, InstanceIds=[created, attached]).ActivityId
    group = world.settle(group_id)
    assert (group.DesiredCapacity, group.InstanceCount) == (0, 0)
    poll(lambda: world.cvm_states([created, attached]) == {attached: "RUNNING"}, what="only the created one gone")
    activity = world.a("DescribeAutoScalingActivities", ActivityIds=[activity_id]).ActivitySet[0]
    assert (activity.ActivityType, activity.StatusCode) == ("REMOVE_INSTANCES", "SUCCESSFUL")


def test_protection(world: World) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=2)
    world.settle(group_id)
    ids = sorted(m.InstanceId for m in world.instances(group_id))
    world.a("SetInstancesProtection", AutoScalingGroupId=group_id, InstanceIds=ids, ProtectedFromScaleIn=True)
    assert all(m.ProtectedFromScaleIn for m in world.instances(group_id))
    error = error_of(lambda: world.a("ScaleInInstances", AutoScalingGroupId=group_id, ScaleInNumber=1))
    assert error.code == "FailedOperation.NoActivityToGenerate"
    world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=0)
    group = world.idle(group_id)
    assert (group.DesiredCapacity, group.InstanceCount) == (0, 2)  # protected servers are never scaled in
    outside = lambda: world.a(  # noqa: E731
        "SetInstancesProtection", AutoScalingGroupId=group_id, InstanceIds=["ins-00000000"], ProtectedFromScaleIn=True
    )
    assert error_of(outside).code == "ResourceNotFound.InstancesNotInAutoScalingGroup"
    world.a("SetInstancesProtection", AutoScalingGroupId=group_id, InstanceIds=ids[:1], ProtectedFromScaleIn=False)
    poll(lambda: world.describe_group(group_id).InstanceCount == 1, what="the unprotected server scaled in")


def test_attaching_servers_already_behind_the_listener_keeps_them_bound_once(world: World) -> None:
    lb_id, listener_id = world.listener()
    group_id = world.group(world.launch_configuration(), forward=(lb_id, listener_id))
    existing = run_servers(world, 1)
    targets = [{"InstanceId": existing[0], "Port": 80, "Weight": 10}]
    registered = world.clb("RegisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=targets)
    poll(lambda: world.clb("DescribeTaskStatus", TaskId=registered.RequestId).Status == 0, what="registered")
    activity_id = world.a("AttachInstances", AutoScalingGroupId=group_id, InstanceIds=existing).ActivityId
    world.settle(group_id)
    activity = world.a("DescribeAutoScalingActivities", ActivityIds=[activity_id]).ActivitySet[0]
    assert activity.StatusCode == "SUCCESSFUL"
    assert world.targets(lb_id, listener_id) == [(existing[0], 80, 10)]
