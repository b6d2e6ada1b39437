"""CLB 2018-03-17 conformance, through the real SDK: load balancers, listeners, targets, asynchronous tasks."""

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest
from tencentcloud.clb.v20180317 import clb_client
from tencentcloud.clb.v20180317 import models as clb_models
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.cvm.v20170312 import models as cvm_models
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

import sandbox.services  # noqa: F401  (registers every action, for `needs_instances`)
from sandbox.core.registry import ACTIONS
from tests.sdk import poll as poll_state

ZONE = "ap-guangzhou-3"
IMAGE = "img-l8og963d"  # the catalog's public CentOS


def call(sdk: Any, models: Any, action: str, params: dict[str, Any]) -> Any:
    """One typed SDK call: the request model built from a dict, the response model returned."""
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    return getattr(sdk, action)(request)


def error_of(thunk: Callable[[], Any]) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as info:
        thunk()
    return info.value


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    return poll_state(check, what=what, timeout=timeout)


class Cloud:
    """The SDK clients a CLB test needs, with the few calls every test repeats."""

    def __init__(self, client: Any) -> None:
        self.clb = client(clb_client.ClbClient)
        self.cvm = client(cvm_client.CvmClient)
        self.vpc = client(vpc_client.VpcClient)

    def lb_call(self, action: str, **params: Any) -> Any:
        return call(self.clb, clb_models, action, params)

    def default_subnet(self) -> Any:
        answer = call(self.vpc, vpc_models, "DescribeSubnets", {"Filters": [{"Name": "zone", "Values": [ZONE]}]})
        return next(s for s in answer.SubnetSet if s.IsDefault)

    def task_status(self, **key: str) -> int:
        return self.lb_call("DescribeTaskStatus", **key).Status

    def wait_task(self, timeout: float = 5.0, **key: str) -> int:
        """Poll DescribeTaskStatus until the task leaves 2 (running); its final status."""
        return wait_until(lambda: (s := self.task_status(**key)) != 2 and s + 10, timeout, f"task {key}") - 10

    def create_lb(self, lb_type: str = "INTERNAL", **extra: Any) -> str:
        params: dict[str, Any] = {"LoadBalancerType": lb_type, **extra}
        if lb_type == "INTERNAL" and "SubnetId" not in params:
            subnet = self.default_subnet()
            params.update(VpcId=subnet.VpcId, SubnetId=subnet.SubnetId)
        answer = self.lb_call("CreateLoadBalancer", **params)
        assert self.wait_task(DealName=answer.DealName) == 0
        return answer.LoadBalancerIds[0]

    def describe_lb(self, lb_id: str) -> Any:
        return self.lb_call("DescribeLoadBalancers", LoadBalancerIds=[lb_id]).LoadBalancerSet[0]

    def create_listener(self, lb_id: str, port: int = 80, protocol: str = "TCP", **extra: Any) -> str:
        answer = self.lb_call("CreateListener", LoadBalancerId=lb_id, Ports=[port], Protocol=protocol, **extra)
        assert self.wait_task(TaskId=answer.RequestId) == 0
        return answer.ListenerIds[0]

    def run_instances(self, count: int = 1, vpc_id: str | None = None, subnet_id: str | None = None) -> list[str]:
        params: dict[str, Any] = {
            "Placement": {"Zone": ZONE},
            "ImageId": IMAGE,
            "InstanceType": "S5.MEDIUM4",
            "InstanceCount": count,
        }
        if vpc_id:
            params["VirtualPrivateCloud"] = {"VpcId": vpc_id, "SubnetId": subnet_id}
        ids = call(self.cvm, cvm_models, "RunInstances", params).InstanceIdSet
        wait_until(lambda: self.all_running(ids), what="instances RUNNING")
        return ids

    def all_running(self, ids: list[str]) -> bool:
        answer = call(self.cvm, cvm_models, "DescribeInstances", {"InstanceIds": ids})
        return len(answer.InstanceSet) == len(ids) and all(i.InstanceState == "RUNNING" for i in answer.InstanceSet)


@pytest.fixture
def cloud(client: Any) -> Cloud:
    return Cloud(client)


needs_instances = pytest.mark.skipif(
    ("cvm", "2017-03-12", "RunInstances") not in ACTIONS, reason="the cvm service does not serve RunInstances yet"
)


# ---- load balancers ---------------------------------------------------------------------------------


def test_internal_lb_gets_a_vip_from_its_subnet_and_becomes_normal(cloud: Cloud) -> None:
    subnet = cloud.default_subnet()
    answer = cloud.lb_call(
        "CreateLoadBalancer",
        LoadBalancerType="INTERNAL",
        VpcId=subnet.VpcId,
        SubnetId=subnet.SubnetId,
        ProjectId=1001,
        LoadBalancerName="session-clb",
        Tags=[{"TagKey": "tcscale", "TagValue": "session"}],
    )
    assert answer.DealName and len(answer.LoadBalancerIds) == 1
    # The creation is a task found both by its DealName and by the RequestId.
    assert cloud.wait_task(DealName=answer.DealName) == 0
    status = cloud.lb_call("DescribeTaskStatus", TaskId=answer.RequestId)
    assert (status.Status, status.LoadBalancerIds) == (0, answer.LoadBalancerIds)
    lb = cloud.describe_lb(answer.LoadBalancerIds[0])
    assert (lb.Status, lb.LoadBalancerType, lb.LoadBalancerName, lb.ProjectId) == (1, "INTERNAL", "session-clb", 1001)
    assert (lb.VpcId, lb.SubnetId, lb.Forward) == (subnet.VpcId, subnet.SubnetId, 1)
    prefix = subnet.CidrBlock.rsplit(".", 1)[0] + "."
    assert len(lb.LoadBalancerVips) == 1 and lb.LoadBalancerVips[0].startswith(prefix)
    assert [(t.TagKey, t.TagValue) for t in lb.Tags] == [("tcscale", "session")]


def test_open_lb_defaults_to_the_default_vpc_and_a_public_vip(cloud: Cloud, sandbox: Any) -> None:
    lb_id = cloud.create_lb("OPEN")
    lb = cloud.describe_lb(lb_id)
    default_vpc = cloud.default_subnet().VpcId
    assert (lb.LoadBalancerType, lb.VpcId, lb.SubnetId, lb.VipIsp) == ("OPEN", default_vpc, "", "BGP")
    pool = ipaddress.ip_network(sandbox.admin("GET", "health")["public_pool"])  # 127.100.0.0/16 unless taken
    assert ipaddress.ip_address(lb.LoadBalancerVips[0]) in pool


def test_client_token_makes_creation_idempotent(cloud: Cloud) -> None:
    first = cloud.lb_call("CreateLoadBalancer", LoadBalancerType="OPEN", ClientToken="scale-session-1")
    again = cloud.lb_call("CreateLoadBalancer", LoadBalancerType="OPEN", ClientToken="scale-session-1")
    assert (again.LoadBalancerIds, again.DealName) == (first.LoadBalancerIds, first.DealName)
    assert cloud.lb_call("DescribeLoadBalancers").TotalCount == 1


def test_creation_is_asynchronous_and_blocks_writes_until_normal(cloud: Cloud, sandbox: Any) -> None:
    sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.05})  # creation ~0.3 s, tasks ~0.1 s
    answer = cloud.lb_call("CreateLoadBalancer", LoadBalancerType="OPEN")
    lb_id = answer.LoadBalancerIds[0]
    assert cloud.describe_lb(lb_id).Status == 0
    assert cloud.task_status(DealName=answer.DealName) == 2
    error = error_of(lambda: cloud.lb_call("CreateListener", LoadBalancerId=lb_id, Ports=[80], Protocol="TCP"))
    assert error.code == "FailedOperation.ResourceInOperating"
    assert cloud.wait_task(DealName=answer.DealName) == 0
    assert cloud.describe_lb(lb_id).Status == 1


def test_async_failure_of_creation_fails_the_task_and_removes_the_lb(cloud: Cloud, sandbox: Any) -> None:
    sandbox.admin(
        "POST", "faults", {"service": "clb", "action": "CreateLoadBalancer", "async_failure": "no capacity left"}
    )
    answer = cloud.lb_call("CreateLoadBalancer", LoadBalancerType="OPEN")
    assert cloud.wait_task(DealName=answer.DealName) == 1
    assert cloud.lb_call("DescribeTaskStatus", DealName=answer.DealName).Message == "no capacity left"
    assert cloud.lb_call("DescribeLoadBalancers", LoadBalancerIds=answer.LoadBalancerIds).TotalCount == 0


def test_create_validation_errors(cloud: Cloud) -> None:
    subnet = cloud.default_subnet()
    cases = [
        ({"LoadBalancerType": "INTERNAL"}, "InvalidParameter"),  # no SubnetId
        ({"LoadBalancerType": "OPEN", "SubnetId": subnet.SubnetId}, "InvalidParameterCombination"),
        ({"LoadBalancerType": "PRIVATE"}, "InvalidParameterValue"),
        ({"LoadBalancerType": "OPEN", "Number": 0}, "InvalidParameterValue.Range"),
        ({"LoadBalancerType": "OPEN", "LoadBalancerName": "x" * 81}, "InvalidParameterValue.Length"),
        ({"LoadBalancerType": "OPEN", "ClientToken": "t" * 65}, "InvalidParameterValue.Length"),
        ({"LoadBalancerType": "OPEN", "ProjectId": 424242}, "InvalidParameterValue"),
        ({"LoadBalancerType": "OPEN", "Colour": "blue"}, "UnknownParameter"),
        ({}, "MissingParameter"),
    ]
    for params, code in cases:
        assert error_of(lambda p=params: cloud.clb.call_json("CreateLoadBalancer", p)).code == code, params


def test_describe_filters_and_pages(cloud: Cloud) -> None:
    internal = cloud.create_lb("INTERNAL", LoadBalancerName="session", Tags=[{"TagKey": "tier", "TagValue": "s"}])
    public = [cloud.create_lb("OPEN", LoadBalancerName=f"biz-{i}") for i in range(3)]
    describe = cloud.lb_call
    assert describe("DescribeLoadBalancers").TotalCount == 4
    assert [
        lb.LoadBalancerId for lb in describe("DescribeLoadBalancers", LoadBalancerType="INTERNAL").LoadBalancerSet
    ] == [internal]
    assert describe("DescribeLoadBalancers", LoadBalancerName="biz").TotalCount == 3  # fuzzy match
    vip = cloud.describe_lb(internal).LoadBalancerVips[0]
    by_vip = describe("DescribeLoadBalancers", LoadBalancerVips=[vip]).LoadBalancerSet
    assert [lb.LoadBalancerId for lb in by_vip] == [internal]
    tagged = describe("DescribeLoadBalancers", Filters=[{"Name": "tag:tier", "Values": ["s"]}]).LoadBalancerSet
    assert [lb.LoadBalancerId for lb in tagged] == [internal]
    assert describe("DescribeLoadBalancers", Filters=[{"Name": "tag-key", "Values": ["tier"]}]).TotalCount == 1
    assert describe("DescribeLoadBalancers", ProjectId=1001).TotalCount == 0
    # Newest first by default; pages of 2.
    first = describe("DescribeLoadBalancers", Limit=2).LoadBalancerSet
    second = describe("DescribeLoadBalancers", Limit=2, Offset=2).LoadBalancerSet
    assert [lb.LoadBalancerId for lb in first + second] == [*reversed(public), internal]
    assert describe("DescribeLoadBalancers", Limit=2).TotalCount == 4
    bad_filter = [{"Name": "colour", "Values": ["x"]}]
    error = error_of(lambda: describe("DescribeLoadBalancers", Filters=bad_filter))
    assert error.code == "InvalidParameterValue.InvalidFilter"
    assert error_of(lambda: describe("DescribeLoadBalancers", Limit=101)).code == "InvalidParameterValue"
    assert describe("DescribeLoadBalancers", LoadBalancerIds=["lb-nothere1"]).TotalCount == 0


def test_delete_is_a_task_and_releases_the_vip(cloud: Cloud, sandbox: Any) -> None:
    lb_id = cloud.create_lb("INTERNAL")
    vip = cloud.describe_lb(lb_id).LoadBalancerVips[0]
    fault = {"service": "clb", "action": "DeleteLoadBalancer", "async_failure": "deletion refused", "count": 1}
    sandbox.admin("POST", "faults", fault)
    failed = cloud.lb_call("DeleteLoadBalancer", LoadBalancerIds=[lb_id])
    assert cloud.wait_task(TaskId=failed.RequestId) == 1
    assert cloud.describe_lb(lb_id).Status == 1  # a failed deletion leaves the LB in place
    answer = cloud.lb_call("DeleteLoadBalancer", LoadBalancerIds=[lb_id])
    assert cloud.wait_task(TaskId=answer.RequestId) == 0
    assert cloud.lb_call("DescribeLoadBalancers", LoadBalancerIds=[lb_id]).TotalCount == 0
    # The address is free again: the next internal LB in that subnet gets it.
    assert cloud.describe_lb(cloud.create_lb("INTERNAL")).LoadBalancerVips == [vip]
    error = error_of(lambda: cloud.lb_call("DeleteLoadBalancer", LoadBalancerIds=[lb_id]))
    assert error.code == "InvalidParameter.LBIdNotFound"


def test_get_requests_with_flattened_filters(client: Any, cloud: Cloud) -> None:
    tagged = cloud.create_lb("OPEN", Tags=[{"TagKey": "tier", "TagValue": "biz"}])
    cloud.create_lb("OPEN")
    via_get = client(clb_client.ClbClient, method="GET")
    params = {"Filters": [{"Name": "tag:tier", "Values": ["biz"]}], "Limit": 10}
    answer = call(via_get, clb_models, "DescribeLoadBalancers", params)
    assert [lb.LoadBalancerId for lb in answer.LoadBalancerSet] == [tagged]


def test_task_status_needs_task_id_or_deal_name(cloud: Cloud) -> None:
    assert error_of(lambda: cloud.lb_call("DescribeTaskStatus")).code == "MissingParameter"
    assert error_of(lambda: cloud.lb_call("DescribeTaskStatus", TaskId="no-such-task")).code == "ResourceNotFound"


# ---- listeners --------------------------------------------------------------------------------------


def test_listeners_create_describe_delete(cloud: Cloud) -> None:
    lb_id = cloud.create_lb()
    health = {"HealthSwitch": 1, "TimeOut": 2, "IntervalTime": 5, "HealthNum": 3, "UnHealthNum": 3}
    tcp = cloud.create_listener(lb_id, 80, ListenerNames=["session"], HealthCheck=health, Scheduler="WRR")
    udp = cloud.create_listener(lb_id, 80, "UDP")  # the same port on another transport is fine
    http = cloud.create_listener(lb_id, 8080, "HTTP")
    answer = cloud.lb_call("DescribeListeners", LoadBalancerId=lb_id)
    assert answer.TotalCount == 3
    listener = cloud.lb_call("DescribeListeners", LoadBalancerId=lb_id, Protocol="TCP").Listeners[0]
    assert (listener.ListenerId, listener.ListenerName, listener.Port, listener.Scheduler) == (
        tcp,
        "session",
        80,
        "WRR",
    )
    assert (listener.HealthCheck.HealthSwitch, listener.HealthCheck.CheckType, listener.Rules) == (1, "TCP", None)
    assert cloud.lb_call("DescribeListeners", LoadBalancerId=lb_id, ListenerIds=[udp]).Listeners[0].Protocol == "UDP"
    assert cloud.lb_call("DescribeListeners", LoadBalancerId=lb_id, Port=8080).Listeners[0].ListenerId == http

    duplicate = error_of(lambda: cloud.lb_call("CreateListener", LoadBalancerId=lb_id, Ports=[80], Protocol="HTTP"))
    assert duplicate.code == "InvalidParameter.PortCheckFailed"

    answer = cloud.lb_call("DeleteListener", LoadBalancerId=lb_id, ListenerId=udp)
    assert cloud.wait_task(TaskId=answer.RequestId) == 0
    assert cloud.lb_call("DescribeListeners", LoadBalancerId=lb_id).TotalCount == 2
    gone = error_of(lambda: cloud.lb_call("DeleteListener", LoadBalancerId=lb_id, ListenerId=udp))
    assert gone.code == "InvalidParameter.ListenerIdNotFound"


def test_listener_validation_errors(cloud: Cloud) -> None:
    lb_id = cloud.create_lb()
    cases = [
        ({"Ports": [0], "Protocol": "TCP"}, "InvalidParameterValue.Range"),
        ({"Ports": [80, 80], "Protocol": "TCP"}, "InvalidParameterValue.Duplicate"),
        ({"Ports": [80], "Protocol": "SCTP"}, "InvalidParameterValue"),
        ({"Ports": [80], "Protocol": "TCP", "Scheduler": "RANDOM"}, "InvalidParameterValue"),
        ({"Ports": [80], "Protocol": "TCP", "HealthCheck": {"TimeOut": 9, "IntervalTime": 5}}, "InvalidParameterValue"),
        ({"Ports": [80], "Protocol": "TCP", "HealthCheck": {"HealthNum": 11}}, "InvalidParameterValue.Range"),
        ({"Ports": [80, 81], "Protocol": "TCP", "ListenerNames": ["one"]}, "InvalidParameter"),
        ({"Ports": ["eighty"], "Protocol": "TCP"}, "InvalidParameter"),
    ]
    for params, code in cases:
        thunk = lambda p=params: cloud.clb.call_json("CreateListener", {"LoadBalancerId": lb_id, **p})  # noqa: E731
        assert error_of(thunk).code == code, params
    missing = error_of(lambda: cloud.lb_call("CreateListener", LoadBalancerId="lb-nothere1", Ports=[1], Protocol="TCP"))
    assert missing.code == "InvalidParameter.LBIdNotFound"


def test_concurrent_writes_collide_while_a_task_runs(cloud: Cloud, sandbox: Any) -> None:
    lb_id = cloud.create_lb()
    sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.25})  # a task takes ~0.5 s
    first = cloud.lb_call("CreateListener", LoadBalancerId=lb_id, Ports=[80], Protocol="TCP")
    assert cloud.task_status(TaskId=first.RequestId) == 2
    # The listener is visible at once while its task still runs, and the LB refuses other writes.
    assert cloud.lb_call("DescribeListeners", LoadBalancerId=lb_id).TotalCount == 1
    second = error_of(lambda: cloud.lb_call("CreateListener", LoadBalancerId=lb_id, Ports=[81], Protocol="TCP"))
    assert second.code == "FailedOperation.ResourceInOperating"
    assert "CreateQLBListener" in second.message
    delete = error_of(lambda: cloud.lb_call("DeleteLoadBalancer", LoadBalancerIds=[lb_id]))
    assert delete.code == "FailedOperation.ResourceInOperating"
    assert cloud.wait_task(TaskId=first.RequestId) == 0
    cloud.create_listener(lb_id, 81)  # free again once the task is over


def test_async_failure_of_a_listener_write_leaves_the_lb_as_it_was(cloud: Cloud, sandbox: Any) -> None:
    lb_id = cloud.create_lb()
    kept = cloud.create_listener(lb_id, 80)
    sandbox.admin("POST", "faults", {"service": "clb", "action": "DeleteListener", "async_failure": "device busy"})
    answer = cloud.lb_call("DeleteListener", LoadBalancerId=lb_id, ListenerId=kept)
    assert cloud.wait_task(TaskId=answer.RequestId) == 1
    assert cloud.lb_call("DescribeTaskStatus", TaskId=answer.RequestId).Message == "device busy"
    listeners = cloud.lb_call("DescribeListeners", LoadBalancerId=lb_id).Listeners
    assert [li.ListenerId for li in listeners] == [kept]


def test_sandbox_events_report_lb_changes(cloud: Cloud, sandbox: Any) -> None:
    seen: list[tuple[str, str, int]] = []
    events = sandbox.cloud.events

    def changed(lb: Any) -> None:
        seen.append(("changed", lb.load_balancer_id, len(lb.listeners)))

    def deleted(lb: Any) -> None:
        seen.append(("deleted", lb.load_balancer_id, len(lb.listeners)))

    events.subscribe("clb.changed", changed)
    events.subscribe("clb.deleted", deleted)
    try:
        lb_id = cloud.create_lb()
        cloud.create_listener(lb_id, 80)
        answer = cloud.lb_call("DeleteLoadBalancer", LoadBalancerIds=[lb_id])
        assert cloud.wait_task(TaskId=answer.RequestId) == 0
    finally:
        events.unsubscribe("clb.changed", changed)
        events.unsubscribe("clb.deleted", deleted)
    assert seen == [("changed", lb_id, 0), ("changed", lb_id, 1), ("deleted", lb_id, 1)]


# ---- targets (need CVM instances) ---------------------------------------------------------------------


def describe_targets(cloud: Cloud, lb_id: str, listener_id: str) -> list[Any]:
    return cloud.lb_call("DescribeTargets", LoadBalancerId=lb_id, ListenerIds=[listener_id]).Listeners[0].Targets


def target_health(cloud: Cloud, lb_id: str) -> dict[str, tuple[bool, str]]:
    answer = cloud.lb_call("DescribeTargetHealth", LoadBalancerIds=[lb_id]).LoadBalancers[0]
    targets = [t for listener in answer.Listeners for rule in listener.Rules for t in rule.Targets]
    return {t.TargetId: (t.HealthStatus, t.HealthStatusDetail) for t in targets}


@needs_instances
def test_register_describe_health_and_deregister_targets(cloud: Cloud, sandbox: Any) -> None:
    lb_id = cloud.create_lb()
    listener_id = cloud.create_listener(lb_id, 80)
    first, second = cloud.run_instances(2)
    targets = [{"InstanceId": first, "Port": 80}, {"InstanceId": second, "Port": 8080, "Weight": 50}]
    answer = cloud.lb_call("RegisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=targets)
    assert cloud.wait_task(TaskId=answer.RequestId) == 0

    instances = call(cloud.cvm, cvm_models, "DescribeInstances", {"InstanceIds": [first, second]}).InstanceSet
    ips = {i.InstanceId: i.PrivateIpAddresses for i in instances}
    names = {i.InstanceId: i.InstanceName for i in instances}
    bound = {t.InstanceId: t for t in describe_targets(cloud, lb_id, listener_id)}
    assert {(i, t.Port, t.Weight) for i, t in bound.items()} == {(first, 80, 10), (second, 8080, 50)}
    assert all(t.PrivateIpAddresses == ips[i] and t.InstanceName == names[i] for i, t in bound.items())
    assert all(t.RegisteredTime and t.Type == "CVM" for t in bound.values())
    with_rs = cloud.lb_call("DescribeLoadBalancers", BackendPrivateIps=ips[first]).LoadBalancerSet
    assert [(lb.LoadBalancerId, lb.TargetCount) for lb in with_rs] == [(lb_id, 2)]

    # Health: unknown until the data plane's checker reports (the VIP is not admitted here: then Dead).
    assert {detail for _, detail in target_health(cloud, lb_id).values()} <= {"Unknown", "Dead"}
    # (Alive once admitted: tests/dataplane/test_balancers.py, where the real checker reports it.)
    clb_backend = sandbox.cloud.clb
    assert [lb.load_balancer_id for lb, _, _ in clb_backend.targets_of_instance(first)] == [lb_id]

    # Binding the same instance and port again is refused; deregistering is a task too.
    again = [{"InstanceId": first, "Port": 80}]
    error = error_of(
        lambda: cloud.lb_call("RegisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=again)
    )
    assert error.code == "InvalidParameter"
    answer = cloud.lb_call("DeregisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=again)
    assert cloud.wait_task(TaskId=answer.RequestId) == 0
    assert [t.InstanceId for t in describe_targets(cloud, lb_id, listener_id)] == [second]
    error = error_of(
        lambda: cloud.lb_call("DeregisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=again)
    )
    assert error.code == "InvalidParameter"


@needs_instances
def test_one_instance_is_bound_on_two_ports_of_one_tcp_listener(cloud: Cloud) -> None:
    """An application CLB's listener may send to several backend ports of one server (the console's "add port"):
    a target is the pair (instance, port), registered, described, health-checked and deregistered as a pair."""
    lb_id = cloud.create_lb()
    listener_id = cloud.create_listener(lb_id, 80)
    (server,) = cloud.run_instances(1)
    both = [{"InstanceId": server, "Port": 80}, {"InstanceId": server, "Port": 8080}]
    answer = cloud.lb_call("RegisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=both)
    assert cloud.wait_task(TaskId=answer.RequestId) == 0
    assert sorted((t.InstanceId, t.Port) for t in describe_targets(cloud, lb_id, listener_id)) == [
        (server, 80),
        (server, 8080),
    ]
    health = cloud.lb_call("DescribeTargetHealth", LoadBalancerIds=[lb_id]).LoadBalancers[0]
    checked = [(t.TargetId, t.Port) for li in health.Listeners for rule in li.Rules for t in rule.Targets]
    assert sorted(checked) == [(server, 80), (server, 8080)]

    # Deregistering one pair leaves the other bound.
    first = [{"InstanceId": server, "Port": 80}]
    answer = cloud.lb_call("DeregisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=first)
    assert cloud.wait_task(TaskId=answer.RequestId) == 0
    assert [(t.InstanceId, t.Port) for t in describe_targets(cloud, lb_id, listener_id)] == [(server, 8080)]


@needs_instances
def test_only_running_unrestricted_instances_of_the_lb_vpc_can_be_bound(cloud: Cloud, sandbox: Any) -> None:
    lb_id = cloud.create_lb()
    listener_id = cloud.create_listener(lb_id, 80)
    http_listener = cloud.create_listener(lb_id, 8080, "HTTP")
    running, isolated = cloud.run_instances(2)
    sandbox.admin("POST", "cvm/restrict-state", {"instance_id": isolated, "restrict_state": "PROTECTIVELY_ISOLATED"})
    vpc = call(cloud.vpc, vpc_models, "CreateVpc", {"VpcName": "other", "CidrBlock": "127.30.0.0/16"}).Vpc
    subnet_params = {"VpcId": vpc.VpcId, "SubnetName": "other", "CidrBlock": "127.30.1.0/24", "Zone": ZONE}
    subnet = call(cloud.vpc, vpc_models, "CreateSubnet", subnet_params).Subnet
    (elsewhere,) = cloud.run_instances(1, vpc.VpcId, subnet.SubnetId)

    def register(targets: list[dict[str, Any]], listener: str = listener_id) -> str:
        params = {"LoadBalancerId": lb_id, "ListenerId": listener, "Targets": targets}
        return error_of(lambda: cloud.clb.call_json("RegisterTargets", params)).code

    assert register([{"InstanceId": "ins-nothere1", "Port": 80}]) == "InvalidParameter"
    assert register([{"InstanceId": elsewhere, "Port": 80}]) == "InvalidParameter"
    assert register([{"InstanceId": isolated, "Port": 80}]) == "FailedOperation"
    assert register([{"InstanceId": running, "Port": 80, "Weight": 101}]) == "InvalidParameterValue.Range"
    assert register([{"InstanceId": running, "Port": 0}]) == "InvalidParameterValue.Range"
    assert register([{"InstanceId": running, "Port": 80}] * 2) == "InvalidParameterValue.Duplicate"
    assert register([{"InstanceId": running}]) == "MissingParameter"  # Target.Port is required
    assert register([{"InstanceId": running, "Port": p} for p in range(1, 22)]) == "LimitExceeded"
    assert register([{"InstanceId": running, "Port": 80}], http_listener) == "InvalidParameter.LocationNotFound"
    assert register([{"InstanceId": running, "Port": 80}], "lbl-nothere1") == "InvalidParameter.ListenerIdNotFound"

    call(cloud.cvm, cvm_models, "StopInstances", {"InstanceIds": [running]})
    wait_until(lambda: not cloud.all_running([running]), what="instance leaving RUNNING")
    assert register([{"InstanceId": running, "Port": 80}]) == "FailedOperation"


@needs_instances
def test_stopped_target_stays_registered_and_terminated_one_is_unbound(cloud: Cloud) -> None:
    lb_id = cloud.create_lb()
    listener_id = cloud.create_listener(lb_id, 80)
    stopped, terminated = cloud.run_instances(2)
    targets = [{"InstanceId": stopped, "Port": 80}, {"InstanceId": terminated, "Port": 80}]
    answer = cloud.lb_call("RegisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=targets)
    assert cloud.wait_task(TaskId=answer.RequestId) == 0

    call(cloud.cvm, cvm_models, "StopInstances", {"InstanceIds": [stopped]})
    call(cloud.cvm, cvm_models, "TerminateInstances", {"InstanceIds": [terminated]})

    def gone() -> bool:
        return not call(cloud.cvm, cvm_models, "DescribeInstances", {"InstanceIds": [terminated]}).InstanceSet

    wait_until(gone, what="instance terminated")
    assert [t.InstanceId for t in describe_targets(cloud, lb_id, listener_id)] == [stopped]


@needs_instances
def test_async_failure_of_registration_leaves_targets_as_they_were(cloud: Cloud, sandbox: Any) -> None:
    lb_id = cloud.create_lb()
    listener_id = cloud.create_listener(lb_id, 80)
    kept, refused = cloud.run_instances(2)
    answer = cloud.lb_call(
        "RegisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=[{"InstanceId": kept, "Port": 80}]
    )
    assert cloud.wait_task(TaskId=answer.RequestId) == 0
    sandbox.admin("POST", "faults", {"service": "clb", "action": "RegisterTargets", "async_failure": "rs bind failed"})
    answer = cloud.lb_call(
        "RegisterTargets", LoadBalancerId=lb_id, ListenerId=listener_id, Targets=[{"InstanceId": refused, "Port": 80}]
    )
    assert cloud.wait_task(TaskId=answer.RequestId) == 1
    assert [t.InstanceId for t in describe_targets(cloud, lb_id, listener_id)] == [kept]
