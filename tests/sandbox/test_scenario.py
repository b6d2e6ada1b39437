"""Issue 2's scenario, end to end through the real SDK (sync and asyncio clients): what an operator's tool does."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tencentcloud.clb.v20180317 import clb_client, clb_client_async
from tencentcloud.clb.v20180317 import models as clb
from tencentcloud.cvm.v20170312 import cvm_client, cvm_client_async
from tencentcloud.cvm.v20170312 import models as cvm
from tencentcloud.vpc.v20170312 import models as vpc
from tencentcloud.vpc.v20170312 import vpc_client

from tests.sdk import poll as poll_state

ZONE = "ap-guangzhou-3"
CENTOS = "img-l8og963d"


def poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    return poll_state(read, done, timeout=timeout)


def run_request(image_id: str, count: int, token: str, key_id: str) -> cvm.RunInstancesRequest:
    request = cvm.RunInstancesRequest()
    request.from_json_string(
        f"""{{"Placement": {{"Zone": "{ZONE}", "ProjectId": 0}}, "ImageId": "{image_id}",
        "InstanceType": "S5.MEDIUM4", "InstanceCount": {count}, "ClientToken": "{token}",
        "LoginSettings": {{"KeyIds": ["{key_id}"]}},
        "TagSpecification": [{{"ResourceType": "instance", "Tags": [{{"Key": "tier", "Value": "session"}}]}}]}}"""
    )
    return request


def describe(c: cvm_client.CvmClient, ids: list[str]) -> list[Any]:
    request = cvm.DescribeInstancesRequest()
    request.InstanceIds = ids
    return c.DescribeInstances(request).InstanceSet


def test_scenario_sync(client):
    c: cvm_client.CvmClient = client(cvm_client.CvmClient)
    lb: clb_client.ClbClient = client(clb_client.ClbClient)
    net: vpc_client.VpcClient = client(vpc_client.VpcClient)

    key = cvm.CreateKeyPairRequest()
    key.KeyName, key.ProjectId = "ops", 0
    key_id = c.CreateKeyPair(key).KeyPair.KeyId

    (source,) = c.RunInstances(run_request(CENTOS, 1, "source-1", key_id)).InstanceIdSet
    poll(lambda: describe(c, [source])[0].InstanceState, lambda s: s == "RUNNING")

    image = cvm.CreateImageRequest()
    image.InstanceId, image.ImageName = source, "session-image"
    image_id = c.CreateImage(image).ImageId
    images = cvm.DescribeImagesRequest()
    images.ImageIds = [image_id]
    poll(lambda: c.DescribeImages(images).ImageSet[0].ImageState, lambda s: s == "NORMAL")

    first = c.RunInstances(run_request(image_id, 3, "scale-out-1", key_id)).InstanceIdSet
    again = c.RunInstances(run_request(image_id, 3, "scale-out-1", key_id)).InstanceIdSet
    assert len(first) == 3 and first == again
    poll(lambda: [i.InstanceState for i in describe(c, first)], lambda s: s == ["RUNNING"] * 3)

    by_tag = cvm.DescribeInstancesRequest()
    by_tag.from_json_string('{"Filters": [{"Name": "tag:tier", "Values": ["session"]}], "Limit": 2}')
    page1 = c.DescribeInstances(by_tag)
    by_tag.Offset = 2
    page2 = c.DescribeInstances(by_tag)
    assert page1.TotalCount == 4
    assert {i.InstanceId for i in page1.InstanceSet + page2.InstanceSet} == {source, *first}

    instance = describe(c, [source])[0]
    create = clb.CreateLoadBalancerRequest()
    create.LoadBalancerType, create.LoadBalancerName = "INTERNAL", "session-clb"
    create.VpcId, create.SubnetId = instance.VirtualPrivateCloud.VpcId, instance.VirtualPrivateCloud.SubnetId
    created = lb.CreateLoadBalancer(create)
    (lb_id,) = created.LoadBalancerIds
    by_deal = clb.DescribeTaskStatusRequest()
    by_deal.DealName = created.DealName
    assert poll(lambda: lb.DescribeTaskStatus(by_deal).Status, lambda s: s != 2) == 0

    listener = clb.CreateListenerRequest()
    listener.from_json_string(f'{{"LoadBalancerId": "{lb_id}", "Ports": [80], "Protocol": "TCP"}}')
    made = lb.CreateListener(listener)
    wait_task(lb, made.RequestId)
    register = clb.RegisterTargetsRequest()
    targets = ", ".join(f'{{"InstanceId": "{i}", "Port": 80}}' for i in [source, *first])
    register.from_json_string(
        f'{{"LoadBalancerId": "{lb_id}", "ListenerId": "{made.ListenerIds[0]}", "Targets": [{targets}]}}'
    )
    wait_task(lb, lb.RegisterTargets(register).RequestId)
    described = clb.DescribeTargetsRequest()
    described.LoadBalancerId = lb_id
    assert len(lb.DescribeTargets(described).Listeners[0].Targets) == 4

    balancers = clb.DescribeLoadBalancersRequest()
    balancers.LoadBalancerIds = [lb_id]
    vip = lb.DescribeLoadBalancers(balancers).LoadBalancerSet[0].LoadBalancerVips[0]
    rule = vpc.CreateSecurityGroupPoliciesRequest()
    rule.from_json_string(
        f'{{"SecurityGroupId": "{instance.SecurityGroupIds[0]}", "SecurityGroupPolicySet": {{"Ingress": '
        f'[{{"Protocol": "TCP", "Port": "80", "CidrBlock": "{vip}/32", "Action": "ACCEPT"}}]}}}}'
    )
    net.CreateSecurityGroupPolicies(rule)
    policies = vpc.DescribeSecurityGroupPoliciesRequest()
    policies.SecurityGroupId = instance.SecurityGroupIds[0]
    ingress = net.DescribeSecurityGroupPolicies(policies).SecurityGroupPolicySet.Ingress
    assert any(p.CidrBlock == f"{vip}/32" for p in ingress)


def wait_task(lb: clb_client.ClbClient, task_id: str) -> None:
    request = clb.DescribeTaskStatusRequest()
    request.TaskId = task_id
    assert poll(lambda: lb.DescribeTaskStatus(request).Status, lambda s: s != 2) == 0


def test_scenario_async(client):
    c = client(cvm_client_async.CvmClient)
    lb = client(clb_client_async.ClbClient)

    async def scenario() -> None:
        key = cvm.CreateKeyPairRequest()
        key.KeyName, key.ProjectId = "ops_async", 0
        key_id = (await c.CreateKeyPair(key)).KeyPair.KeyId
        ids = (await c.RunInstances(run_request(CENTOS, 3, "async-1", key_id))).InstanceIdSet
        again = (await c.RunInstances(run_request(CENTOS, 3, "async-1", key_id))).InstanceIdSet
        assert ids == again
        request = cvm.DescribeInstancesRequest()
        request.InstanceIds = ids
        deadline, delay = time.monotonic() + 10, 0.01
        while {i.InstanceState for i in (await c.DescribeInstances(request)).InstanceSet} != {"RUNNING"}:
            assert time.monotonic() < deadline
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        create = clb.CreateLoadBalancerRequest()
        create.LoadBalancerType = "OPEN"
        created = await lb.CreateLoadBalancer(create)
        status = clb.DescribeTaskStatusRequest()
        status.DealName = created.DealName
        while (await lb.DescribeTaskStatus(status)).Status == 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(delay)

    asyncio.run(scenario())
