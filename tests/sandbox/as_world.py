"""What the Auto Scaling tests share: real SDK clients (as, cvm, clb, vpc) and the calls every test repeats."""

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tencentcloud.autoscaling.v20180419 import autoscaling_client
from tencentcloud.autoscaling.v20180419 import models as as_models
from tencentcloud.clb.v20180317 import clb_client
from tencentcloud.clb.v20180317 import models as clb_models
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.cvm.v20170312 import models as cvm_models
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

from tests.sdk import poll

ZONE = "ap-guangzhou-3"
IMAGE = "img-l8og963d"  # the catalog's public CentOS


def call(sdk: Any, models: Any, action: str, params: dict[str, Any]) -> Any:
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    return getattr(sdk, action)(request)


def error_of(thunk: Callable[[], Any]) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as info:
        thunk()
    return info.value


class World:
    def __init__(self, client: Any, sandbox: Any) -> None:
        self.sandbox = sandbox
        self.autoscaling = client(autoscaling_client.AutoscalingClient)
        self.cvm_client = client(cvm_client.CvmClient)
        self.clb_client = client(clb_client.ClbClient)
        self.vpc_client = client(vpc_client.VpcClient)

    def a(self, action: str, **params: Any) -> Any:
        return call(self.autoscaling, as_models, action, params)

    def cvm(self, action: str, **params: Any) -> Any:
        return call(self.cvm_client, cvm_models, action, params)

    def clb(self, action: str, **params: Any) -> Any:
        return call(self.clb_client, clb_models, action, params)

    def subnet(self) -> Any:
        answer = call(self.vpc_client, vpc_models, "DescribeSubnets", {"Filters": [{"Name": "zone", "Values": [ZONE]}]})
        return next(s for s in answer.SubnetSet if s.IsDefault)

    def launch_configuration(self, name: str = "web-lc", **extra: Any) -> str:
        params = {"LaunchConfigurationName": name, "ImageId": IMAGE, "InstanceType": "S5.MEDIUM2", **extra}
        return self.a("CreateLaunchConfiguration", **params).LaunchConfigurationId

    def listener(self) -> tuple[str, str]:
        """An internal CLB in the default subnet with a TCP listener on 80: (LoadBalancerId, ListenerId)."""
        subnet = self.subnet()
        created = self.clb(
            "CreateLoadBalancer", LoadBalancerType="INTERNAL", VpcId=subnet.VpcId, SubnetId=subnet.SubnetId
        )
        poll(lambda: self.clb("DescribeTaskStatus", DealName=created.DealName).Status == 0, what="CLB created")
        lb_id = created.LoadBalancerIds[0]
        listener = self.clb("CreateListener", LoadBalancerId=lb_id, Ports=[80], Protocol="TCP")
        poll(lambda: self.clb("DescribeTaskStatus", TaskId=listener.RequestId).Status == 0, what="listener created")
        return lb_id, listener.ListenerIds[0]

    def group(self, lc_id: str, name: str = "web-asg", forward: tuple[str, str] | None = None, **extra: Any) -> str:
        subnet = self.subnet()
        params: dict[str, Any] = {
            "AutoScalingGroupName": name,
            "LaunchConfigurationId": lc_id,
            "MinSize": 0,
            "MaxSize": 5,
            "VpcId": subnet.VpcId,
            "SubnetIds": [subnet.SubnetId],
            **extra,
        }
        if forward:
            params["ForwardLoadBalancers"] = [
                {
                    "LoadBalancerId": forward[0],
                    "ListenerId": forward[1],
                    "TargetAttributes": [{"Port": 80, "Weight": 10}],
                }
            ]
        return self.a("CreateAutoScalingGroup", **params).AutoScalingGroupId

    def describe_group(self, group_id: str) -> Any:
        return self.a("DescribeAutoScalingGroups", AutoScalingGroupIds=[group_id]).AutoScalingGroupSet[0]

    def instances(self, group_id: str) -> list[Any]:
        filters = [{"Name": "auto-scaling-group-id", "Values": [group_id]}]
        return self.a("DescribeAutoScalingInstances", Filters=filters, Limit=100).AutoScalingInstanceSet

    def activities(self, group_id: str) -> list[Any]:
        filters = [{"Name": "auto-scaling-group-id", "Values": [group_id]}]
        return self.a("DescribeAutoScalingActivities", Filters=filters, Limit=100).ActivitySet

    def settle(self, group_id: str, timeout: float = 10.0) -> Any:
        """Poll until the group is NOT_IN_ACTIVITY with as many instances as it desires, all IN_SERVICE."""

        def settled() -> Any:
            group = self.describe_group(group_id)
            steady = group.InActivityStatus == "NOT_IN_ACTIVITY"
            return steady and group.InstanceCount == group.InServiceInstanceCount == group.DesiredCapacity and group

        return poll(settled, what=f"{group_id} settled", timeout=timeout)

    def idle(self, group_id: str, timeout: float = 10.0) -> Any:
        def done() -> Any:
            group = self.describe_group(group_id)
            return group.InActivityStatus == "NOT_IN_ACTIVITY" and group

        return poll(done, what=f"{group_id} not in activity", timeout=timeout)

    def targets(self, lb_id: str, listener_id: str) -> list[tuple[str, int, int]]:
        listeners = self.clb("DescribeTargets", LoadBalancerId=lb_id, ListenerIds=[listener_id]).Listeners
        return sorted((t.InstanceId, t.Port, t.Weight) for li in listeners for t in li.Targets or [])

    def cvm_states(self, ids: list[str]) -> dict[str, str]:
        found = self.cvm("DescribeInstances", InstanceIds=ids).InstanceSet
        return {i.InstanceId: i.InstanceState for i in found}


def shape_errors(action: str, response: dict[str, Any]) -> list[str]:
    """Where an answer differs from the output Tencent's spec declares for the action (types, nesting)."""
    from sandbox.wire import spec

    declared = spec.load("as", "2018-04-19")
    objects = declared["objects"]
    errors: list[str] = []

    def check(value: Any, member: dict[str, Any], path: str) -> None:
        if value is None:
            return
        kind, element = member["type"], member.get("member")
        if kind == "list":
            if not isinstance(value, list):
                errors.append(f"{path}: expected a list")
                return
            for i, item in enumerate(value):
                check(item, {"type": "object" if element in objects else element, "member": element}, f"{path}.{i}")
        elif kind == "object":
            if not isinstance(value, dict):
                errors.append(f"{path}: expected an object")
                return
            members = {m["name"]: m for m in objects.get(element, [])}
            for name, item in value.items():
                if name not in members:
                    errors.append(f"{path}.{name}: not declared")
                else:
                    check(item, members[name], f"{path}.{name}")
        elif kind in ("int", "int64", "uint64") and not (isinstance(value, int) and not isinstance(value, bool)):
            errors.append(f"{path}: expected int, got {value!r}")
        elif kind == "string" and not isinstance(value, str):
            errors.append(f"{path}: expected string, got {value!r}")
        elif kind == "bool" and not isinstance(value, bool):
            errors.append(f"{path}: expected bool, got {value!r}")

    output = declared["actions"][action]["output"]
    check(response, {"type": "object", "member": output}, action)
    return errors


def seed_guide(sandbox: Any) -> dict[str, Any]:
    """The guide's starting point (POST /_sandbox/seed), in a network no other sandbox process here seeded."""
    sandbox.admin("POST", "servers/settle")
    seeded = httpx.post(f"{sandbox.url}/_sandbox/seed", json={}, timeout=60)
    assert seeded.status_code == 200, seeded.text
    return seeded.json()
