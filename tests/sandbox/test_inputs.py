"""What the real API accepts, accepted here: numeric strings, case-insensitive enumerations, the real instance
types; and a public address pool that two sandboxes on one machine never share."""

import ipaddress
import json
import subprocess
import sys
from typing import Any

import pytest
from tencentcloud.clb.v20180317 import clb_client
from tencentcloud.clb.v20180317 import models as clb_models
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.cvm.v20170312 import models as cvm_models
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

from sandbox.core.catalog import INSTANCE_TYPES
from tests.sdk import poll

ZONE = "ap-guangzhou-3"


def call(sdk: Any, models: Any, action: str, params: dict[str, Any]) -> Any:
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))  # the SDK sends the values as given: strings stay strings
    return getattr(sdk, action)(request)


def open_lb(clb: Any) -> str:
    answer = call(clb, clb_models, "CreateLoadBalancer", {"LoadBalancerType": "OPEN"})
    poll(lambda: call(clb, clb_models, "DescribeTaskStatus", {"DealName": answer.DealName}).Status == 0)
    return answer.LoadBalancerIds[0]


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_clb_protocol_in_lower_case_and_ports_as_strings(client: Any, method: str) -> None:
    clb = client(clb_client.ClbClient, method=method)
    lb_id = open_lb(clb)
    params = {"LoadBalancerId": lb_id, "Ports": ["80"], "Protocol": "tcp", "HealthCheck": {"TimeOut": "2"}}
    answer = call(clb, clb_models, "CreateListener", params)
    poll(lambda: call(clb, clb_models, "DescribeTaskStatus", {"TaskId": answer.RequestId}).Status == 0)
    listeners = call(clb, clb_models, "DescribeListeners", {"LoadBalancerId": lb_id, "Protocol": "Tcp"}).Listeners
    assert [(li.Protocol, li.Port, li.HealthCheck.TimeOut) for li in listeners] == [("TCP", 80, 2)]


def test_integer_members_of_nested_objects_take_numeric_strings(client: Any) -> None:
    vpc = client(vpc_client.VpcClient)
    group = call(vpc, vpc_models, "CreateSecurityGroup", {"GroupName": "web", "GroupDescription": "web"})
    group_id = group.SecurityGroup.SecurityGroupId
    policy = {"Protocol": "TCP", "Port": "80", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT", "PolicyIndex": "0"}
    call(
        vpc,
        vpc_models,
        "CreateSecurityGroupPolicies",
        {"SecurityGroupId": group_id, "SecurityGroupPolicySet": {"Ingress": [policy]}},
    )
    answer = call(vpc, vpc_models, "DescribeSecurityGroupPolicies", {"SecurityGroupId": group_id})
    assert [(p.Port, p.PolicyIndex) for p in answer.SecurityGroupPolicySet.Ingress] == [("80", 0)]


def test_a_string_that_is_not_a_number_is_still_refused(client: Any) -> None:
    cvm = client(cvm_client.CvmClient)
    with pytest.raises(TencentCloudSDKException) as info:
        cvm.call_json("DescribeKeyPairs", {"Limit": "ten"})
    assert info.value.code == "InvalidParameter" and "Limit" in info.value.message
    assert cvm.call_json("DescribeKeyPairs", {"Limit": " 10"})["Response"]["TotalCount"] == 0


def test_catalog_holds_the_standard_families_in_every_size() -> None:
    expected = {"SMALL1": (1, 1), "SMALL2": (1, 2), "SMALL4": (1, 4), "MEDIUM2": (2, 2), "MEDIUM4": (2, 4)}
    expected |= {"MEDIUM8": (2, 8), "LARGE8": (4, 8), "LARGE16": (4, 16), "2XLARGE16": (8, 16)}
    expected |= {"2XLARGE32": (8, 32), "4XLARGE32": (16, 32), "4XLARGE64": (16, 64), "8XLARGE64": (32, 64)}
    for family in ("S5", "S6", "SA2", "SA3"):
        for size, (cpu, memory) in expected.items():
            spec = INSTANCE_TYPES[f"{family}.{size}"]
            assert (spec.family, spec.cpu, spec.memory) == (family, cpu, memory)


def test_instance_types_per_zone_and_s5_medium2_launches(client: Any) -> None:
    cvm = client(cvm_client.CvmClient)
    configs = call(
        cvm,
        cvm_models,
        "DescribeInstanceTypeConfigs",
        {"Filters": [{"Name": "instance-type", "Values": ["S5.MEDIUM2"]}]},
    ).InstanceTypeConfigSet
    assert sorted((c.Zone, c.CPU, c.Memory) for c in configs) == [("ap-guangzhou-3", 2, 2), ("ap-guangzhou-4", 2, 2)]
    quota = call(
        cvm,
        cvm_models,
        "DescribeZoneInstanceConfigInfos",
        {"Filters": [{"Name": "zone", "Values": [ZONE]}, {"Name": "instance-family", "Values": ["SA3"]}]},
    ).InstanceTypeQuotaSet
    assert {q.InstanceType for q in quota} >= {"SA3.SMALL1", "SA3.MEDIUM4", "SA3.8XLARGE64"}
    assert all(q.Zone == ZONE and q.Status == "SELL" and q.InstanceChargeType == "POSTPAID_BY_HOUR" for q in quota)
    ids = call(
        cvm,
        cvm_models,
        "RunInstances",
        {"Placement": {"Zone": ZONE}, "ImageId": "img-l8og963d", "InstanceType": "S5.MEDIUM2"},
    ).InstanceIdSet
    instance = call(cvm, cvm_models, "DescribeInstances", {"InstanceIds": ids}).InstanceSet[0]
    assert (instance.InstanceType, instance.CPU, instance.Memory) == ("S5.MEDIUM2", 2, 2)


def test_public_pool_is_reported_and_holds_open_vips(sandbox: Any, client: Any) -> None:
    pool = ipaddress.ip_network(sandbox.admin("GET", "health")["public_pool"])
    assert pool.prefixlen == 16 and pool.subnet_of(ipaddress.ip_network("127.0.0.0/8"))
    clb = client(clb_client.ClbClient)
    vip = call(clb, clb_models, "DescribeLoadBalancers", {"LoadBalancerIds": [open_lb(clb)]}).LoadBalancerSet[0]
    assert ipaddress.ip_address(vip.LoadBalancerVips[0]) in pool


CLAIM = (
    "from sandbox.core.pools import public_pool_for\nclass Sandbox: ...\nowner = Sandbox()\n"
    "print(public_pool_for(owner), flush=True)\ninput()"
)


def test_concurrent_sandbox_processes_never_share_a_public_pool(sandbox: Any) -> None:
    mine = sandbox.admin("GET", "health")["public_pool"]
    others = [
        subprocess.Popen([sys.executable, "-c", CLAIM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        pools = [p.stdout.readline().strip() for p in others if p.stdout]
    finally:
        for process in others:
            process.communicate("\n", timeout=10)
    assert len({mine, *pools}) == 3 and all(ipaddress.ip_network(p).prefixlen == 16 for p in pools)


def test_explicit_public_pool_is_used_as_given() -> None:
    from sandbox.core.emulated_cloud import Cloud, SandboxConfig

    cloud = Cloud(SandboxConfig(dataplane=False, public_pool="127.150.0.0/16"))
    cloud.vpc.ensure_defaults("ap-guangzhou")
    assert cloud.vpc.allocate_public_ip() == "127.150.0.1"
