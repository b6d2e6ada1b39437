"""as 2018-04-19 through the real SDK: launch configurations and scaling groups (create, describe, modify, delete)."""

from typing import Any

import pytest

from tests.sandbox.as_world import IMAGE, World, error_of


@pytest.fixture
def world(client: Any, sandbox: Any) -> World:
    return World(client, sandbox)


# ---- launch configurations -----------------------------------------------------------------------------
def test_launch_configuration_lifecycle(world: World) -> None:
    lc_id = world.launch_configuration(
        "web-lc",
        SecurityGroupIds=[],
        InternetAccessible={"InternetMaxBandwidthOut": 0},
        InstanceNameSettings={"InstanceName": "web"},
        InstanceTags=[{"Key": "tcscale:tier", "Value": "business"}],
    )
    assert lc_id.startswith("asc-")
    lc = world.a("DescribeLaunchConfigurations", LaunchConfigurationIds=[lc_id]).LaunchConfigurationSet[0]
    assert (lc.LaunchConfigurationName, lc.ImageId, lc.InstanceType, lc.InstanceTypes) == (
        "web-lc",
        IMAGE,
        "S5.MEDIUM2",
        ["S5.MEDIUM2"],
    )
    assert (lc.LaunchConfigurationStatus, lc.VersionNumber, lc.InstanceChargeType) == ("NORMAL", 1, "POSTPAID_BY_HOUR")
    assert lc.CreatedTime.endswith("Z") and lc.InstanceNameSettings.InstanceName == "web"
    world.a(
        "ModifyLaunchConfigurationAttributes",
        LaunchConfigurationId=lc_id,
        InstanceTypes=["SA2.MEDIUM4", "S5.LARGE8"],
        LaunchConfigurationName="web-lc-2",
    )
    lc = world.a("DescribeLaunchConfigurations", LaunchConfigurationIds=[lc_id]).LaunchConfigurationSet[0]
    assert (lc.LaunchConfigurationName, lc.InstanceType, lc.VersionNumber) == ("web-lc-2", "SA2.MEDIUM4", 2)
    vague = [{"Name": "vague-launch-configuration-name", "Values": ["LC-2"]}]
    assert world.a("DescribeLaunchConfigurations", Filters=vague).TotalCount == 1
    world.a("DeleteLaunchConfiguration", LaunchConfigurationId=lc_id)
    assert world.a("DescribeLaunchConfigurations").TotalCount == 0
    error = error_of(lambda: world.a("DeleteLaunchConfiguration", LaunchConfigurationId=lc_id))
    assert error.code == "ResourceNotFound.LaunchConfigurationIdNotFound"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"InstanceType": "S5.HUGE1"}, "InvalidParameterValue.InvalidInstanceType"),
        ({"ImageId": "img-00000000"}, "InvalidParameterValue.ImageNotFound"),
        ({"ImageId": "bad"}, "InvalidParameterValue.InvalidImageId"),
        ({"InstanceTypes": ["S5.SMALL1"]}, "InvalidParameter.Conflict"),
        ({"SecurityGroupIds": ["sg-00000000"]}, "InvalidParameterValue.InvalidSecurityGroupId"),
        ({"ProjectId": 42}, "InvalidParameterValue.ProjectIdNotFound"),
        ({"LoginSettings": {"Password": "short"}}, "InvalidPassword"),
    ],
)
def test_launch_configuration_errors(world: World, extra: dict[str, Any], code: str) -> None:
    assert error_of(lambda: world.launch_configuration("bad-lc", **extra)).code == code


def test_launch_configuration_names_are_unique_and_in_use_ones_stay(world: World) -> None:
    lc_id = world.launch_configuration("web-lc")
    assert error_of(lambda: world.launch_configuration("web-lc")).code == (
        "InvalidParameterValue.LaunchConfigurationNameDuplicated"
    )
    world.group(lc_id)
    error = error_of(lambda: world.a("DeleteLaunchConfiguration", LaunchConfigurationId=lc_id))
    assert error.code == "ResourceInUse.LaunchConfigurationIdInUse"


# ---- groups ----------------------------------------------------------------------------------------------
def test_group_defaults_and_describe(world: World) -> None:
    lc_id = world.launch_configuration()
    group_id = world.group(lc_id, "web-asg", Tags=[{"Key": "tcscale:tier", "Value": "business"}])
    group = world.describe_group(group_id)
    subnet = world.subnet()
    assert (group.AutoScalingGroupName, group.MinSize, group.MaxSize, group.DesiredCapacity) == ("web-asg", 0, 5, 0)
    assert (group.DefaultCooldown, group.TerminationPolicySet, group.RetryPolicy) == (
        300,
        ["OLDEST_INSTANCE"],
        "IMMEDIATE_RETRY",
    )
    assert (group.VpcId, group.SubnetIdSet, group.ZoneSet) == (subnet.VpcId, [subnet.SubnetId], ["ap-guangzhou-3"])
    assert (group.EnabledStatus, group.AutoScalingGroupStatus, group.InActivityStatus) == (
        "ENABLED",
        "NORMAL",
        "NOT_IN_ACTIVITY",
    )
    assert (group.LaunchConfigurationName, group.InstanceCount) == ("web-lc", 0)
    assert [(t.Key, t.Value) for t in group.Tags] == [("tcscale:tier", "business")]
    lc = world.a("DescribeLaunchConfigurations", LaunchConfigurationIds=[lc_id]).LaunchConfigurationSet[0]
    assert [a.AutoScalingGroupId for a in lc.AutoScalingGroupAbstractSet] == [group_id]


def test_describe_groups_filters_and_pages(world: World) -> None:
    lc_id = world.launch_configuration()
    ids = [world.group(lc_id, f"asg-{i}") for i in range(5)]
    page = world.a("DescribeAutoScalingGroups", Limit=2, Offset=1)
    assert page.TotalCount == 5 and len(page.AutoScalingGroupSet) == 2
    by_name = [{"Name": "auto-scaling-group-name", "Values": ["asg-3"]}]
    assert [
        g.AutoScalingGroupId for g in world.a("DescribeAutoScalingGroups", Filters=by_name).AutoScalingGroupSet
    ] == [ids[3]]
    vague = [{"Name": "vague-auto-scaling-group-name", "Values": ["ASG-"]}]
    assert world.a("DescribeAutoScalingGroups", Filters=vague).TotalCount == 5
    by_lc = [{"Name": "launch-configuration-id", "Values": [lc_id]}]
    assert world.a("DescribeAutoScalingGroups", Filters=by_lc).TotalCount == 5
    both = lambda: world.a("DescribeAutoScalingGroups", AutoScalingGroupIds=ids[:1], Filters=by_lc)  # noqa: E731
    assert error_of(both).code == "InvalidParameter.Conflict"
    assert error_of(lambda: world.a("DescribeAutoScalingGroups", Limit=101)).code == "InvalidParameterValue"
    unknown = [{"Name": "colour", "Values": ["red"]}]
    assert (
        error_of(lambda: world.a("DescribeAutoScalingGroups", Filters=unknown)).code == "InvalidParameterValue.Filter"
    )


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"MinSize": 3, "MaxSize": 2}, "InvalidParameterValue.Size"),
        ({"DesiredCapacity": 9}, "InvalidParameterValue.Size"),
        ({"MaxSize": 2001}, "LimitExceeded.MaxSizeLimitExceeded"),
        ({"LaunchConfigurationId": "asc-00000000"}, "InvalidParameterValue.LaunchConfigurationNotFound"),
        ({"SubnetIds": ["subnet-00000000"]}, "InvalidParameterValue.InvalidSubnetId"),
        ({"TerminationPolicies": ["RANDOM"]}, "InvalidParameterValue"),
        ({"RetryPolicy": "SOMETIMES"}, "InvalidParameterValue"),
        ({"DefaultCooldown": 3601}, "InvalidParameterValue.Range"),
        (
            {
                "ForwardLoadBalancers": [
                    {
                        "LoadBalancerId": "lb-00000000",
                        "ListenerId": "lbl-00000000",
                        "TargetAttributes": [{"Port": 80, "Weight": 10}],
                    }
                ]
            },
            "ResourceNotFound.LoadBalancerNotFound",
        ),
    ],
)
def test_group_errors(world: World, extra: dict[str, Any], code: str) -> None:
    lc_id = world.launch_configuration()
    extra = {"LaunchConfigurationId": lc_id, **extra}
    lc = extra.pop("LaunchConfigurationId")
    assert error_of(lambda: world.group(lc, **extra)).code == code


def test_group_names_are_unique_and_listeners_must_exist(world: World) -> None:
    lc_id = world.launch_configuration()
    world.group(lc_id, "web-asg")
    assert error_of(lambda: world.group(lc_id, "web-asg")).code == "InvalidParameterValue.GroupNameDuplicated"
    lb_id, _ = world.listener()
    error = error_of(lambda: world.group(lc_id, "other", forward=(lb_id, "lbl-00000000")))
    assert error.code == "ResourceNotFound.ListenerNotFound"
    error = error_of(lambda: world.group(lc_id, "classic", LoadBalancerIds=[lb_id]))
    assert error.code == "InvalidParameterValue.ForwardLb"


def test_modify_enable_disable_delete(world: World) -> None:
    lc_id = world.launch_configuration()
    other_lc = world.launch_configuration("other-lc")
    group_id = world.group(lc_id)
    world.a(
        "ModifyAutoScalingGroup",
        AutoScalingGroupId=group_id,
        AutoScalingGroupName="renamed",
        MaxSize=8,
        LaunchConfigurationId=other_lc,
        TerminationPolicies=["NEWEST_INSTANCE"],
        DefaultCooldown=60,
    )
    group = world.describe_group(group_id)
    assert (group.AutoScalingGroupName, group.MaxSize, group.LaunchConfigurationId) == ("renamed", 8, other_lc)
    assert (group.TerminationPolicySet, group.DefaultCooldown) == (["NEWEST_INSTANCE"], 60)
    error = error_of(lambda: world.a("ModifyAutoScalingGroup", AutoScalingGroupId=group_id, MinSize=9))
    assert error.code == "InvalidParameterValue.Size"
    world.a("DisableAutoScalingGroup", AutoScalingGroupId=group_id)
    assert world.describe_group(group_id).EnabledStatus == "DISABLED"
    world.a("EnableAutoScalingGroup", AutoScalingGroupId=group_id)
    assert world.describe_group(group_id).EnabledStatus == "ENABLED"
    world.a("DeleteAutoScalingGroup", AutoScalingGroupId=group_id)
    error = error_of(lambda: world.a("DeleteAutoScalingGroup", AutoScalingGroupId=group_id))
    assert error.code == "ResourceNotFound.AutoScalingGroupNotFound"
    error = error_of(lambda: world.a("DeleteAutoScalingGroup", AutoScalingGroupId="asg-bad"))
    assert error.code == "InvalidParameterValue.InvalidAutoScalingGroupId"


def test_requests_are_validated_against_tencents_spec(world: World) -> None:
    error = error_of(lambda: world.a("CreateAutoScalingGroup", AutoScalingGroupName="x"))
    assert error.code == "MissingParameter" and "LaunchConfigurationId" in error.message
    error = error_of(lambda: world.autoscaling.call_json("DescribeAutoScalingGroups", {"Colour": "red"}))
    assert error.code == "UnknownParameter"
    # numeric strings for integer members, as Tencent's own examples send them
    lc_id = world.launch_configuration()
    group_id = world.group(lc_id, MaxSize="3", MinSize="0")
    assert world.describe_group(group_id).MaxSize == 3


def test_a_disabled_group_does_not_scale_until_enabled(world: World) -> None:
    group_id = world.group(world.launch_configuration())
    world.a("DisableAutoScalingGroup", AutoScalingGroupId=group_id)
    error = error_of(lambda: world.a("ScaleOutInstances", AutoScalingGroupId=group_id, ScaleOutNumber=1))
    assert error.code == "ResourceUnavailable.AutoScalingGroupDisabled"
    world.a("ModifyDesiredCapacity", AutoScalingGroupId=group_id, DesiredCapacity=1)
    group = world.idle(group_id)
    assert (group.DesiredCapacity, group.InstanceCount, world.activities(group_id)) == (1, 0, [])
    world.a("EnableAutoScalingGroup", AutoScalingGroupId=group_id)
    assert world.settle(group_id).InServiceInstanceCount == 1
