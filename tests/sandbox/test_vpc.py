"""vpc 2017-03-12 through the real SDK: VPCs, subnets, security groups and rules; and `admits` directly."""

import json
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vpc.v20170312 import models, vpc_client

from sandbox.core.emulated_cloud import Cloud, SandboxConfig
from sandbox.vpc.backend import VpcBackend

SPEC = json.loads((Path(__file__).parents[2] / "sandbox/specs/vpc-2017-03-12.json").read_text())


@pytest.fixture
def vpc(client) -> vpc_client.VpcClient:
    return client(vpc_client.VpcClient)


def call(vpc: vpc_client.VpcClient, action: str, **params: Any) -> Any:
    """Send an action through the SDK's typed request/response models."""
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    return getattr(vpc, action)(request)


def error(vpc: vpc_client.VpcClient, action: str, **params: Any) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as info:
        call(vpc, action, **params)
    return info.value


def check_shape(value: Any, object_name: str, path: str = "") -> None:
    """Every field we answer with is declared in tccli's output object, with its declared type."""
    members = {m["name"]: m for m in SPEC["objects"][object_name]}
    for name, field in value.items():
        assert name in members, f"{path}{name} is not a member of {object_name}"
        member, kind = members[name], members[name]["type"]
        items = field if kind == "list" else [field]
        if kind == "list":
            assert isinstance(field, list), f"{path}{name} should be a list"
        for item in items:
            if member.get("member") in SPEC["objects"]:
                check_shape(item, member["member"], f"{path}{name}.")
            elif kind != "object":
                python = {"int": int, "bool": bool, "string": str, "float": float}
                element = member.get("member", "string") if kind == "list" else kind
                element = {"uint64": "int", "int64": "int"}.get(element, element)
                assert isinstance(item, python[element]), f"{path}{name}: {item!r} is not {element}"


def raw(vpc: vpc_client.VpcClient, action: str, **params: Any) -> dict[str, Any]:
    answer = vpc.call_json(action, params)["Response"]
    check_shape(answer, SPEC["actions"][action]["output"])
    return answer


def new_group(vpc, name: str = "web", **extra: Any) -> str:
    return call(vpc, "CreateSecurityGroup", GroupName=name, GroupDescription="d", **extra).SecurityGroup.SecurityGroupId


def add(vpc, group: str, direction: str = "Ingress", **rule: Any) -> None:
    call(vpc, "CreateSecurityGroupPolicies", SecurityGroupId=group, SecurityGroupPolicySet={direction: [rule]})


def rules(vpc, group: str) -> Any:
    return call(vpc, "DescribeSecurityGroupPolicies", SecurityGroupId=group).SecurityGroupPolicySet


# ---- VPCs -------------------------------------------------------------------------------------
def test_every_region_has_a_default_vpc_with_real_shapes(vpc):
    answer = raw(vpc, "DescribeVpcs")
    assert answer["TotalCount"] == 1
    default = answer["VpcSet"][0]
    assert default["IsDefault"] and default["CidrBlock"] == "127.16.0.0/16"
    subnets = raw(vpc, "DescribeSubnets", Filters=[{"Name": "vpc-id", "Values": [default["VpcId"]]}])
    assert sorted(s["Zone"] for s in subnets["SubnetSet"]) == ["ap-guangzhou-3", "ap-guangzhou-4"]
    assert all(s["AvailableIpAddressCount"] == 253 and s["TotalIpAddressCount"] == 256 for s in subnets["SubnetSet"])
    groups = raw(vpc, "DescribeSecurityGroups")
    assert [g["SecurityGroupName"] for g in groups["SecurityGroupSet"]] == ["default"]
    raw(vpc, "DescribeSecurityGroupPolicies", SecurityGroupId=groups["SecurityGroupSet"][0]["SecurityGroupId"])


def test_create_vpc_then_filter_and_page(vpc):
    tags = [{"Key": "tier", "Value": "session"}]
    created = call(vpc, "CreateVpc", VpcName="wafer-session", CidrBlock="127.30.0.0/16", Tags=tags).Vpc
    assert created.VpcId.startswith("vpc-") and not created.IsDefault and created.TagSet[0].Value == "session"
    call(vpc, "CreateVpc", VpcName="wafer-business", CidrBlock="127.31.0.0/16")

    def names(**params: Any) -> list[str]:
        return [v.VpcName for v in call(vpc, "DescribeVpcs", **params).VpcSet]

    assert names(VpcIds=[created.VpcId]) == ["wafer-session"]
    assert names(Filters=[{"Name": "vpc-name", "Values": ["wafer"]}]) == ["wafer-session", "wafer-business"]
    assert names(Filters=[{"Name": "is-default", "Values": ["true"]}]) == ["Default-VPC"]
    assert names(Filters=[{"Name": "cidr-block", "Values": ["127.31.0.0/16"]}]) == ["wafer-business"]
    assert names(Filters=[{"Name": "tag:tier", "Values": ["session"]}]) == ["wafer-session"]
    assert names(Filters=[{"Name": "vpc-id", "Values": ["vpc-00000000"]}]) == []
    paged = call(vpc, "DescribeVpcs", Offset="1", Limit="1")
    assert paged.TotalCount == 3 and [v.VpcName for v in paged.VpcSet] == ["wafer-session"]


@pytest.mark.parametrize(
    ("cidr", "code", "words"),
    [
        ("10.0.0.0/16", "InvalidParameterValue", "127.0.0.0/8"),
        ("127.16.0.0/20", "InvalidParameterValue", "default VPC"),
        ("127.0.0.0/16", "InvalidParameterValue", "loopback services"),
        ("127.32.0.0/8", "InvalidParameterValue.Malformed", "not a CIDR"),
        ("127.40.0.0/30", "InvalidParameterValue", "/12 to /28"),
    ],
)
def test_create_vpc_refuses_cidrs_the_sandbox_cannot_serve(vpc, cidr, code, words):
    failure = error(vpc, "CreateVpc", VpcName="x", CidrBlock=cidr)
    assert failure.code == code and words in failure.message


def test_create_vpc_refuses_overlap_bad_names_and_missing_cidr(vpc):
    call(vpc, "CreateVpc", VpcName="a", CidrBlock="127.30.0.0/16")
    assert "overlaps" in error(vpc, "CreateVpc", VpcName="b", CidrBlock="127.30.128.0/20").message
    assert error(vpc, "CreateVpc", VpcName="", CidrBlock="127.31.0.0/16").code == "InvalidParameterValue.Empty"
    assert error(vpc, "CreateVpc", VpcName="n" * 61, CidrBlock="127.31.0.0/16").code == "InvalidParameterValue.TooLong"
    assert error(vpc, "CreateVpc", VpcName="c").code == "MissingParameter"


def test_describe_errors_use_the_vpc_codes(vpc):
    both = {"VpcIds": ["vpc-00000000"], "Filters": [{"Name": "vpc-id", "Values": ["vpc-00000000"]}]}
    assert error(vpc, "DescribeVpcs", **both).code == "InvalidParameter.Coexist"
    bad_filter = [{"Name": "color", "Values": ["blue"]}]
    assert error(vpc, "DescribeVpcs", Filters=bad_filter).code == "InvalidParameter.FilterInvalidKey"
    assert error(vpc, "DescribeVpcs", Limit="101").code == "InvalidParameterValue.Range"
    assert error(vpc, "DescribeVpcs", Offset="one").code == "InvalidParameterValue.Malformed"
    assert error(vpc, "DescribeVpcs", VpcIds=["not-a-vpc"]).code == "InvalidParameterValue.Malformed"
    assert error(vpc, "DescribeSubnets", SubnetIds=["subnet-1"]).code == "InvalidParameterValue.Malformed"


# ---- Subnets ----------------------------------------------------------------------------------
def test_create_subnet_filters_and_address_accounting(vpc, sandbox):
    vpc_id = call(vpc, "CreateVpc", VpcName="v", CidrBlock="127.30.0.0/16").Vpc.VpcId
    tags = [{"Key": "tier", "Value": "business"}]
    made = call(
        vpc, "CreateSubnet", VpcId=vpc_id, SubnetName="biz", Zone="ap-guangzhou-4", CidrBlock="127.30.1.0/24", Tags=tags
    ).Subnet
    assert (made.VpcId, made.Zone, made.IsDefault, made.AvailableIpAddressCount) == (
        vpc_id,
        "ap-guangzhou-4",
        False,
        253,
    )
    call(vpc, "CreateSubnet", VpcId=vpc_id, SubnetName="auth", Zone="ap-guangzhou-3", CidrBlock="127.30.2.0/28")

    backend: VpcBackend = sandbox.cloud.backends["vpc"]  # type: ignore[assignment]
    backend.allocate_ip(backend.state.subnets[made.SubnetId])  # an instance takes an address
    described = call(vpc, "DescribeSubnets", SubnetIds=[made.SubnetId]).SubnetSet[0]
    assert described.AvailableIpAddressCount == 252 and described.RouteTableId.startswith("rtb-")

    def names(*filters: tuple[str, str]) -> list[str]:
        chosen = [{"Name": n, "Values": [v]} for n, v in filters]
        return [s.SubnetName for s in call(vpc, "DescribeSubnets", Filters=chosen).SubnetSet]

    assert names(("vpc-id", vpc_id)) == ["biz", "auth"]
    assert names(("vpc-id", vpc_id), ("zone", "ap-guangzhou-3")) == ["auth"]
    assert names(("subnet-id", made.SubnetId)) == ["biz"]
    assert names(("subnet-name", "auth"), ("cidr-block", "127.30.2.0/28")) == ["auth"]
    assert names(("is-default", "TRUE")) == ["Default-Subnet", "Default-Subnet"]
    assert names(("tag:tier", "business")) == ["biz"]
    paged = call(vpc, "DescribeSubnets", Limit="2", Offset="2")
    assert paged.TotalCount == 4 and len(paged.SubnetSet) == 2
    first = call(vpc, "DescribeSubnets", MaxResults=3)
    rest = call(vpc, "DescribeSubnets", MaxResults=3, NextToken=first.NextToken)
    assert len(first.SubnetSet) == 3 and len(rest.SubnetSet) == 1 and rest.NextToken == ""


def test_create_subnet_errors(vpc):
    vpc_id = call(vpc, "CreateVpc", VpcName="v", CidrBlock="127.30.0.0/16").Vpc.VpcId
    call(vpc, "CreateSubnet", VpcId=vpc_id, SubnetName="a", Zone="ap-guangzhou-3", CidrBlock="127.30.0.0/24")

    def code(**params: Any) -> str:
        base = {"VpcId": vpc_id, "SubnetName": "b", "Zone": "ap-guangzhou-3", "CidrBlock": "127.30.9.0/24"}
        return error(vpc, "CreateSubnet", **{**base, **params}).code

    assert code(CidrBlock="127.31.0.0/24") == "InvalidParameterValue.SubnetRange"
    assert code(CidrBlock="127.30.0.128/25") == "InvalidParameterValue.SubnetConflict"
    assert code(CidrBlock="127.30.0.0/29") == "InvalidParameterValue.SubnetRange"
    assert code(Zone="ap-shanghai-2") == "InvalidParameterValue"
    assert code(VpcId="vpc-00000000") == "ResourceNotFound"
    assert code(VpcId="vpc") == "InvalidParameterValue.Malformed"
    assert code(CidrBlock="127.30.9.1/24") == "InvalidParameterValue.Malformed"


# ---- Security groups --------------------------------------------------------------------------
def test_create_and_describe_security_groups(vpc):
    tags = [{"Key": "owner", "Value": "tcscale"}]
    made = call(vpc, "CreateSecurityGroup", GroupName="web", GroupDescription="b", ProjectId="1001", Tags=tags)
    group = made.SecurityGroup
    assert group.SecurityGroupId.startswith("sg-") and group.ProjectId == "1001" and not group.IsDefault
    auth = new_group(vpc, "auth")

    def names(**params: Any) -> list[str]:
        return [g.SecurityGroupName for g in call(vpc, "DescribeSecurityGroups", **params).SecurityGroupSet]

    assert names(SecurityGroupIds=[auth]) == ["auth"]
    assert names(Filters=[{"Name": "security-group-name", "Values": ["web", "auth"]}]) == ["web", "auth"]
    assert names(Filters=[{"Name": "project-id", "Values": ["1001"]}]) == ["web"]
    assert names(Filters=[{"Name": "security-group-id", "Values": [auth]}]) == ["auth"]
    assert names(Filters=[{"Name": "tag:owner", "Values": ["tcscale"]}]) == ["web"]
    assert names(Offset="1", Limit="1") == ["web"]
    assert len(names(OrderField="UpdateTime", OrderDirection="DESC")) == 3
    assert error(vpc, "DescribeSecurityGroups", OrderField="Name").code == "InvalidParameterValue"
    rules_of_new = rules(vpc, auth)
    assert (rules_of_new.Version, rules_of_new.Ingress, rules_of_new.Egress) == ("0", [], [])


def test_security_group_errors(vpc):
    assert error(vpc, "DescribeSecurityGroups", SecurityGroupIds=["sg-00000000"]).code == "ResourceNotFound"
    assert error(vpc, "DescribeSecurityGroups", SecurityGroupIds=["sg"]).code == "InvalidSecurityGroupID.Malformed"
    assert error(vpc, "DescribeSecurityGroupPolicies", SecurityGroupId="sg-00000000").code == "ResourceNotFound"
    assert error(vpc, "CreateSecurityGroup", GroupName="", GroupDescription="d").code == "InvalidParameterValue.Empty"
    assert error(vpc, "CreateSecurityGroup", GroupName="x", GroupDescription="d", ProjectId="77").code == (
        "InvalidParameterValue"
    )


def test_policies_are_appended_in_order_and_versioned(vpc):
    group, peer = new_group(vpc), new_group(vpc, "peer")
    add(vpc, group, Protocol="TCP", Port="80", CidrBlock="127.16.3.0/24", Action="ACCEPT", PolicyDescription="vip")
    add(vpc, group, Protocol="tcp", Port="8000-8010,22", SecurityGroupId=peer, Action="accept")
    add(vpc, group, Protocol="ALL", CidrBlock="0.0.0.0/8", Action="DROP")
    add(vpc, group, "Egress", Protocol="ALL", Port="ALL", CidrBlock="0.0.0.0/0", Action="ACCEPT")
    policy_set = rules(vpc, group)
    assert policy_set.Version == "4"
    assert [
        (p.PolicyIndex, p.Protocol, p.Port, p.CidrBlock, p.SecurityGroupId, p.Action) for p in policy_set.Ingress
    ] == [
        (0, "TCP", "80", "127.16.3.0/24", "", "ACCEPT"),
        (1, "TCP", "8000-8010,22", "", peer, "ACCEPT"),
        (2, "ALL", "ALL", "0.0.0.0/0", "", "DROP"),
    ]
    assert policy_set.Ingress[0].PolicyDescription == "vip" and policy_set.Ingress[0].ModifyTime
    assert [p.Action for p in policy_set.Egress] == ["ACCEPT"]
    # PolicyIndex 0 inserts at the front; a stale Version is refused
    call(
        vpc,
        "CreateSecurityGroupPolicies",
        SecurityGroupId=group,
        SecurityGroupPolicySet={
            "Version": "4",
            "Ingress": [{"PolicyIndex": 0, "Protocol": "ICMP", "CidrBlock": "127.0.0.0/8", "Action": "ACCEPT"}],
        },
    )
    assert rules(vpc, group).Ingress[0].Protocol == "ICMP"
    stale = {
        "Version": "4",
        "Ingress": [{"Protocol": "UDP", "Port": "53", "CidrBlock": "127.0.0.1", "Action": "ACCEPT"}],
    }
    failure = error(vpc, "CreateSecurityGroupPolicies", SecurityGroupId=group, SecurityGroupPolicySet=stale)
    assert failure.code == "UnsupportedOperation.VersionMismatch"
    only = {"Name": "direction", "Values": ["OUTBOUND"]}
    filtered = call(vpc, "DescribeSecurityGroupPolicies", SecurityGroupId=group, Filters=[only]).SecurityGroupPolicySet
    assert (len(filtered.Ingress), len(filtered.Egress)) == (0, 1)


def test_duplicate_rule_is_the_real_error(vpc):
    group = new_group(vpc)
    rule = {"Protocol": "TCP", "Port": "80", "CidrBlock": "127.16.3.5", "Action": "ACCEPT"}
    add(vpc, group, **rule)
    failure = error(
        vpc, "CreateSecurityGroupPolicies", SecurityGroupId=group, SecurityGroupPolicySet={"Ingress": [rule]}
    )
    assert failure.code == "UnsupportedOperation.DuplicatePolicy"
    twice = {"Ingress": [{**rule, "Port": "81"}, {**rule, "Port": "81", "PolicyDescription": "again"}]}
    failure = error(vpc, "CreateSecurityGroupPolicies", SecurityGroupId=group, SecurityGroupPolicySet=twice)
    assert failure.code == "UnsupportedOperation.DuplicatePolicy"
    assert len(rules(vpc, group).Ingress) == 1  # a refused request adds nothing
    add(vpc, group, "Egress", **rule)  # the same rule in the other direction is another rule


BASE_RULE = {"Protocol": "TCP", "CidrBlock": "127.0.0.1", "Action": "ACCEPT"}
TEMPLATE = {"AddressId": "ipm-2uw6ujo6"}


def ingress(**changes: Any) -> dict[str, Any]:
    """A one-rule Ingress set: BASE_RULE with changes (None removes a field)."""
    rule = {k: v for k, v in {**BASE_RULE, **changes}.items() if v is not None}
    return {"Ingress": [rule]}


@pytest.mark.parametrize(
    ("policy_set", "code"),
    [
        ({**ingress(), "Egress": [BASE_RULE]}, "InvalidParameter.Coexist"),
        ({"Version": "0"}, "MissingParameter"),
        (ingress(SecurityGroupId="SELF"), "InvalidParameter.Coexist"),
        (ingress(CidrBlock=None, AddressTemplate=TEMPLATE), "UnsupportedOperation"),
        (ingress(AddressTemplate=TEMPLATE), "InvalidParameter.Coexist"),
        (ingress(Protocol="ICMP", Port="80"), "InvalidParameter.Coexist"),
        (ingress(Action="ALLOW"), "InvalidParameterValue"),
        (ingress(Action=None), "MissingParameter"),
        (ingress(Protocol="SCTP"), "InvalidParameterValue"),
        (ingress(Port="http"), "InvalidParameterValue.Malformed"),
        (ingress(Port="70000"), "InvalidParameterValue.Range"),
        (ingress(Port="90-80"), "InvalidParameterValue.Range"),
        (ingress(CidrBlock="127.0.0.300"), "InvalidParameterValue.Malformed"),
        (ingress(CidrBlock=None), "MissingParameter"),
        (ingress(CidrBlock=None, SecurityGroupId="sg-00000000"), "ResourceNotFound"),
    ],
)
def test_rule_fields_that_exclude_each_other(vpc, policy_set, code):
    group = new_group(vpc)
    text = json.dumps(policy_set).replace("SELF", group)
    failure = error(vpc, "CreateSecurityGroupPolicies", SecurityGroupId=group, SecurityGroupPolicySet=json.loads(text))
    assert failure.code == code, failure.message


def test_delete_policies_by_index_or_by_rule(vpc):
    group = new_group(vpc)
    for port in ("80", "443", "8080"):
        add(vpc, group, Protocol="TCP", Port=port, CidrBlock="127.0.0.0/8", Action="ACCEPT")

    def delete(**policy_set: Any) -> None:
        call(vpc, "DeleteSecurityGroupPolicies", SecurityGroupId=group, SecurityGroupPolicySet=policy_set)

    delete(Ingress=[{"PolicyIndex": 1}])
    assert [p.Port for p in rules(vpc, group).Ingress] == ["80", "8080"]
    delete(Ingress=[{"Protocol": "TCP", "Port": "8080", "CidrBlock": "127.0.0.0/8", "Action": "ACCEPT"}])
    assert [p.Port for p in rules(vpc, group).Ingress] == ["80"]

    def code(**policy_set: Any) -> str:
        return error(vpc, "DeleteSecurityGroupPolicies", SecurityGroupId=group, SecurityGroupPolicySet=policy_set).code

    assert code(Ingress=[{"PolicyIndex": 5}]) == "InvalidParameterValue.Range"
    assert code(Ingress=[{"Protocol": "UDP", "Port": "80", "CidrBlock": "127.0.0.0/8", "Action": "ACCEPT"}]) == (
        "ResourceNotFound"
    )
    mixed = [{"PolicyIndex": 0}, {"Protocol": "TCP", "Port": "80", "CidrBlock": "127.0.0.0/8", "Action": "ACCEPT"}]
    assert code(Ingress=mixed) == "InvalidParameter.Coexist"
    assert code(Ingress=[{"PolicyIndex": 0}], Egress=[{"PolicyIndex": 0}]) == "InvalidParameter.Coexist"
    assert code(Version="1", Ingress=[{"PolicyIndex": 0}]) == "UnsupportedOperation.VersionMismatch"
    delete(Version="5", Ingress=[{"PolicyIndex": 0}])
    assert rules(vpc, group).Ingress == []


def running_instance(cloud: Cloud, groups: list[str], private_ip: str, public_ip: str | None = None) -> None:
    """A RUNNING server in cvm's state, as RunInstances would leave it (only what vpc reads matters)."""
    try:
        from sandbox.cvm.models import Instance
    except ImportError:  # the cvm package before its split into modules
        from sandbox.cvm.backend import Instance
    instance = Instance(
        instance_id=f"ins-{len(cloud.backends['cvm'].state.instances):08d}",
        region="ap-guangzhou",
        zone="ap-guangzhou-3",
        instance_type="S5.MEDIUM4",
        instance_name="guest",
        image_id="img-l8og963d",
        os_name="CentOS 7.9 64位",
        platform="CentOS",
        state="RUNNING",
        vpc_id="vpc-00000000",
        subnet_id="subnet-00000000",
        private_ip=private_ip,
        public_ip=public_ip,
        security_group_ids=groups,
        created_time=cloud.clock.iso(),
    )
    cloud.backends["cvm"].state.instances[instance.instance_id] = instance  # type: ignore[attr-defined]


def test_delete_security_group(vpc, sandbox):
    kept, bound, free = new_group(vpc, "kept"), new_group(vpc, "bound"), new_group(vpc, "free")
    add(vpc, kept, Protocol="TCP", Port="80", SecurityGroupId=free, Action="ACCEPT")
    running_instance(sandbox.cloud, [bound], "127.16.3.2")
    assert error(vpc, "DeleteSecurityGroup", SecurityGroupId=bound).code == "ResourceInUse"
    assert error(vpc, "DeleteSecurityGroup", SecurityGroupId=free).code == "ResourceInUse"  # a rule refers to it
    default = call(vpc, "DescribeSecurityGroups", Filters=[{"Name": "security-group-name", "Values": ["default"]}])
    assert error(vpc, "DeleteSecurityGroup", SecurityGroupId=default.SecurityGroupSet[0].SecurityGroupId).code == (
        "UnsupportedOperation"
    )
    call(vpc, "DeleteSecurityGroup", SecurityGroupId=kept)
    call(vpc, "DeleteSecurityGroup", SecurityGroupId=free)  # no longer referenced
    assert error(vpc, "DeleteSecurityGroup", SecurityGroupId=kept).code == "ResourceNotFound"


def test_get_requests_carry_string_paging_and_filters(client):
    vpc = client(vpc_client.VpcClient, method="GET")
    call(vpc, "CreateSecurityGroup", GroupName="via-get", GroupDescription="d")
    answer = call(
        vpc, "DescribeSecurityGroups", Filters=[{"Name": "security-group-name", "Values": ["via-get"]}], Limit="5"
    )
    assert [g.SecurityGroupName for g in answer.SecurityGroupSet] == ["via-get"]


# ---- admits: what the data plane enforces -----------------------------------------------------
@pytest.fixture
def cloud() -> Cloud:
    return Cloud(SandboxConfig(port=0))


def rule(cloud: Cloud, group: str, **fields: Any) -> None:
    backend: VpcBackend = cloud.backends["vpc"]  # type: ignore[assignment]
    backend.add_policies("ap-guangzhou", group, "Ingress", [fields], None)


def test_admits_first_matching_rule_decides(cloud):
    backend: VpcBackend = cloud.backends["vpc"]  # type: ignore[assignment]
    group = backend.create_security_group("ap-guangzhou", "web", "", 0, {}).security_group_id
    assert not backend.admits([group], "127.16.3.9", 80)  # a new group drops everything
    rule(cloud, group, Protocol="TCP", Port="80", CidrBlock="127.16.3.9/32", Action="DROP")
    rule(cloud, group, Protocol="TCP", Port="80,8000-8010", CidrBlock="127.16.0.0/16", Action="ACCEPT")
    assert not backend.admits([group], "127.16.3.9", 80)  # the earlier DROP wins
    assert backend.admits([group], "127.16.3.10", 80)
    assert backend.admits([group], "127.16.4.10", 8005)
    assert not backend.admits([group], "127.16.4.10", 8011)  # no rule for this port
    assert not backend.admits([group], "127.17.0.5", 80)  # outside the CIDR
    assert not backend.admits([group], "127.16.3.10", 80, "UDP")  # wrong protocol
    assert not backend.admits([group], "not-an-ip", 80)
    assert not backend.admits(["sg-gone0000"], "127.16.3.10", 80)


def test_admits_evaluates_groups_in_binding_order(cloud):
    backend: VpcBackend = cloud.backends["vpc"]  # type: ignore[assignment]
    deny = backend.create_security_group("ap-guangzhou", "deny", "", 0, {}).security_group_id
    allow = backend.create_security_group("ap-guangzhou", "allow", "", 0, {}).security_group_id
    rule(cloud, deny, Protocol="ALL", CidrBlock="0.0.0.0/0", Action="DROP")
    rule(cloud, allow, Protocol="TCP", Port="ALL", CidrBlock="0.0.0.0/0", Action="ACCEPT")
    assert not backend.admits([deny, allow], "127.1.2.3", 22)
    assert backend.admits([allow, deny], "127.1.2.3", 22)
    assert backend.admits([backend.default_security_group("ap-guangzhou").security_group_id], "127.9.9.9", 1, "UDP")


def test_admits_a_source_security_group_means_its_instances(cloud):
    backend: VpcBackend = cloud.backends["vpc"]  # type: ignore[assignment]
    session = backend.create_security_group("ap-guangzhou", "session", "", 0, {}).security_group_id
    business = backend.create_security_group("ap-guangzhou", "business", "", 0, {}).security_group_id
    rule(cloud, session, Protocol="TCP", Port="80", SecurityGroupId=business, Action="ACCEPT")
    running_instance(cloud, [business], "127.16.3.2", public_ip="127.100.0.7")
    running_instance(cloud, [session], "127.16.3.3")
    assert backend.admits([session], "127.16.3.2", 80)
    assert backend.admits([session], "127.100.0.7", 80)
    assert not backend.admits([session], "127.16.3.3", 80)  # a member of `session`, not of `business`
    assert not backend.admits([session], "127.16.3.2", 443)
