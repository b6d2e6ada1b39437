"""Auto Scaling end to end with the data plane: a group launched from an image of the seeded business server boots
real servers whose apps answer through the group's CLB VIP, and the traffic they serve drives an alarm policy."""

from typing import Any

import httpx
import pytest

from tests.sandbox.as_world import World, seed_guide
from tests.sdk import load, poll


@pytest.fixture
def world(client: Any, sandbox: Any) -> World:
    return World(client, sandbox)


def test_group_servers_boot_from_the_image_answer_through_the_vip_and_their_traffic_scales_out(
    world: World, sandbox: Any
) -> None:
    s = seed_guide(sandbox)
    image_id = world.cvm("CreateImage", InstanceId=s["business_server"]["instance_id"], ImageName="business").ImageId
    poll(lambda: world.cvm("DescribeImages", ImageIds=[image_id]).ImageSet[0].ImageState == "NORMAL", what="image")
    port = s["ports"]["business"]  # the app's real port: listener port = backend port, as the guide sets it
    lb = world.clb(
        "CreateLoadBalancer",
        LoadBalancerType="INTERNAL",
        VpcId=s["vpc"]["vpc_id"],
        SubnetId=s["subnet"]["subnet_id"],
        ProjectId=s["project_id"],
    )
    poll(lambda: world.clb("DescribeTaskStatus", DealName=lb.DealName).Status == 0, what="CLB")
    lb_id = lb.LoadBalancerIds[0]
    listener = world.clb("CreateListener", LoadBalancerId=lb_id, Ports=[port], Protocol="TCP")
    poll(lambda: world.clb("DescribeTaskStatus", TaskId=listener.RequestId).Status == 0, what="listener")
    lc_id = world.a(
        "CreateLaunchConfiguration",
        LaunchConfigurationName="business",
        ImageId=image_id,
        InstanceType="S5.SMALL1",
        ProjectId=s["project_id"],
        SecurityGroupIds=[s["security_groups"]["business"]],
        LoginSettings={"KeyIds": [s["key_pair"]["key_id"]]},
    ).LaunchConfigurationId
    forward = [
        {
            "LoadBalancerId": lb_id,
            "ListenerId": listener.ListenerIds[0],
            "TargetAttributes": [{"Port": port, "Weight": 10}],
        }
    ]
    group_id = world.a(
        "CreateAutoScalingGroup",
        AutoScalingGroupName="business",
        LaunchConfigurationId=lc_id,
        MinSize=0,
        MaxSize=3,
        DesiredCapacity=2,
        VpcId=s["vpc"]["vpc_id"],
        ProjectId=s["project_id"],
        SubnetIds=[s["subnet"]["subnet_id"]],
        ForwardLoadBalancers=forward,
    ).AutoScalingGroupId
    world.settle(group_id, timeout=30)
    members = sorted(m.InstanceId for m in world.instances(group_id))

    def apps_online() -> bool:
        guests = {g["instance_id"]: g for g in sandbox.admin("GET", "guests")["servers"]}
        return all(any(a["state"] == "online" for a in guests.get(i, {}).get("apps", {}).values()) for i in members)

    poll(apps_online, what="the apps of the group's servers", timeout=30)
    vip = world.clb("DescribeLoadBalancers", LoadBalancerIds=[lb_id]).LoadBalancerSet[0].LoadBalancerVips[0]
    url = f"http://{vip}:{s['ports']['map'][str(port)]}/"
    poll(lambda: _answers(url), what="the business app through the VIP", timeout=30)
    poll(lambda: _healthy(world, lb_id) == set(members), what="both servers healthy behind the CLB", timeout=30)

    alarm = {
        "ComparisonOperator": "GREATER_THAN",
        "MetricName": "CPU_UTILIZATION",
        "Threshold": 2,
        "Period": 60,
        "ContinuousTime": 1,
    }
    world.a(
        "CreateScalingPolicy",
        AutoScalingGroupId=group_id,
        ScalingPolicyName="busy",
        MetricAlarm=alarm,
        AdjustmentType="CHANGE_IN_CAPACITY",
        AdjustmentValue=1,
    )
    before = sandbox.admin("GET", "metrics")["servers"]
    load(url, 80)  # a new connection each: the balancer spreads them over both servers
    after = sandbox.admin("GET", "metrics")["servers"]
    served = {i: after[i]["requests"] - before[i]["requests"] for i in members}
    assert sum(served.values()) == 80 and min(served.values()) > 0, served
    # 40 requests a server: at least 20 in one minute (if they straddle two) -> CPU 1 + 100 x 20 x 0.05 / 60 = 2.7 %
    # > 2 in that minute's period (sandbox.core.metrics; a period of 60 s covers one minute of samples)
    sandbox.admin("POST", "clock", {"advance": 125})  # the periods holding those requests end: the alarm holds
    group = world.settle(group_id, timeout=30)
    assert group.DesiredCapacity == 3
    assert "busy" in world.activities(group_id)[0].Cause


def _healthy(world: World, lb_id: str) -> set[str]:
    """The servers the CLB's health checks find healthy: the ones it forwards new connections to."""
    answer = world.clb("DescribeTargetHealth", LoadBalancerIds=[lb_id]).LoadBalancers[0]
    return {
        t.TargetId for listener in answer.Listeners for rule in listener.Rules for t in rule.Targets if t.HealthStatus
    }


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False
