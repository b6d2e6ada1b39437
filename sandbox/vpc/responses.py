"""VPC 2017-03-12 actions: request parameters in, response shapes out (the rules live in the backend)."""

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sandbox.core.errors import ApiError
from sandbox.core.query import tag_list
from sandbox.core.registry import Request, action
from sandbox.vpc.backend import SecurityGroup, SecurityGroupPolicy, Subnet, Vpc, VpcBackend
from sandbox.vpc.validation import check_id

VERSION = "2017-03-12"
T = TypeVar("T")
# A filter: does this item match any of these values?
Matcher = Callable[[Any, list[str]], bool]


def vpc_backend(req: Request) -> VpcBackend:
    backend: VpcBackend = req.cloud.backends["vpc"]  # type: ignore[assignment]
    backend.ensure_defaults(req.region)
    return backend


# ---- Describe machinery, with this API's own error codes --------------------------------------
def exact(get: Callable[[Any], str]) -> Matcher:
    return lambda item, values: get(item) in values


def fuzzy(get: Callable[[Any], str]) -> Matcher:
    return lambda item, values: any(v in get(item) for v in values)


def boolean(get: Callable[[Any], bool]) -> Matcher:
    return lambda item, values: any(v.upper() == str(get(item)).upper() for v in values)


def select(
    items: Iterable[T], req: Request, ids_param: str, get_id: Callable[[T], str], fields: dict[str, Matcher]
) -> list[T]:
    """Ids or Filters (never both), AND between filters, OR between one filter's values, tag filters."""
    ids, filters = req.get(ids_param), req.get("Filters")
    if ids and filters:
        raise ApiError("InvalidParameter.Coexist", f"{ids_param} and Filters cannot be given together.")
    if ids and len(ids) > 100:
        raise ApiError("InvalidParameterValue.LimitExceeded", f"{ids_param} takes at most 100 ids.")
    result = list(items)
    if ids:
        wanted = set(ids)
        result = [i for i in result if get_id(i) in wanted]
    for f in filters or []:
        name, values = f["Name"], [str(v) for v in f.get("Values") or []]
        if name.startswith("tag:"):
            key = name.removeprefix("tag:")
            result = [i for i in result if i.tags.get(key) in values]  # type: ignore[attr-defined]
        elif name == "tag-key":
            result = [i for i in result if set(i.tags) & set(values)]  # type: ignore[attr-defined]
        elif name in fields:
            result = [i for i in result if fields[name](i, values)]
        else:
            raise ApiError("InvalidParameter.FilterInvalidKey", f"The filter `{name}` is not supported here.")
    return result


def page(items: list[T], req: Request) -> list[T]:
    """Offset / Limit, which this API declares as strings."""
    offset, limit = as_int("Offset", req.get("Offset"), 0), as_int("Limit", req.get("Limit"), 20)
    if offset < 0 or not 1 <= limit <= 100:
        raise ApiError("InvalidParameterValue.Range", "Offset must be ≥ 0 and Limit between 1 and 100.")
    return items[offset : offset + limit]


def as_int(name: str, value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError("InvalidParameterValue.Malformed", f"`{name}` must be an integer, not `{value}`.") from None


def tags_of(req: Request) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag in req.get("Tags") or []:
        if tag["Key"] in tags:
            raise ApiError("InvalidParameterValue.TagDuplicateKey", f"The tag key `{tag['Key']}` is repeated.")
        tags[tag["Key"]] = tag.get("Value", "")
    return tags


# ---- VPCs and subnets -------------------------------------------------------------------------
def vpc_view(vpc: Vpc) -> dict[str, Any]:
    return {
        "VpcName": vpc.vpc_name,
        "VpcId": vpc.vpc_id,
        "CidrBlock": vpc.cidr_block,
        "IsDefault": vpc.is_default,
        "EnableMulticast": vpc.enable_multicast,
        "CreatedTime": vpc.created_time,
        "DnsServerSet": vpc.dns_servers,
        "DomainName": vpc.domain_name,
        "DhcpOptionsId": "",
        "EnableDhcp": True,
        "Ipv6CidrBlock": "",
        "TagSet": tag_list(vpc.tags),
        "AssistantCidrSet": [],
        "EnableRouteVpcPublish": False,
        "Ipv6CidrBlockSet": [],
        "EnableRouteVpcPublishIpv6": False,
    }


def subnet_view(subnet: Subnet, backend: VpcBackend) -> dict[str, Any]:
    return {
        "VpcId": subnet.vpc_id,
        "SubnetId": subnet.subnet_id,
        "SubnetName": subnet.subnet_name,
        "CidrBlock": subnet.cidr_block,
        "IsDefault": subnet.is_default,
        "EnableBroadcast": False,
        "Zone": subnet.zone,
        "RouteTableId": backend.state.vpcs[subnet.vpc_id].route_table_id,
        "CreatedTime": subnet.created_time,
        "AvailableIpAddressCount": subnet.available_ip_count,
        "Ipv6CidrBlock": "",
        "NetworkAclId": "",
        "IsRemoteVpcSnat": False,
        "TotalIpAddressCount": subnet.total_ip_count,
        "TagSet": tag_list(subnet.tags),
        "CdcId": "",
        "IsCdcSubnet": 0,
    }


def check_ids(req: Request, param: str, prefix: str) -> None:
    for ident in req.get(param) or []:
        check_id(param, ident, prefix)


@action("vpc", VERSION, "DescribeVpcs")
def describe_vpcs(req: Request) -> dict[str, Any]:
    backend = vpc_backend(req)
    check_ids(req, "VpcIds", "vpc")
    fields = {
        "vpc-id": exact(lambda v: v.vpc_id),
        "vpc-name": fuzzy(lambda v: v.vpc_name),
        "is-default": boolean(lambda v: v.is_default),
        "cidr-block": exact(lambda v: v.cidr_block),
    }
    vpcs = select(backend.vpcs(req.region), req, "VpcIds", lambda v: v.vpc_id, fields)
    return {"TotalCount": len(vpcs), "VpcSet": [vpc_view(v) for v in page(vpcs, req)]}


@action("vpc", VERSION, "DescribeSubnets")
def describe_subnets(req: Request) -> dict[str, Any]:
    backend = vpc_backend(req)
    check_ids(req, "SubnetIds", "subnet")
    fields = {
        "subnet-id": exact(lambda s: s.subnet_id),
        "vpc-id": exact(lambda s: s.vpc_id),
        "cidr-block": exact(lambda s: s.cidr_block),
        "is-default": boolean(lambda s: s.is_default),
        "is-remote-vpc-snat": boolean(lambda s: False),
        "subnet-name": exact(lambda s: s.subnet_name),
        "zone": exact(lambda s: s.zone),
    }
    subnets = select(backend.subnets(req.region), req, "SubnetIds", lambda s: s.subnet_id, fields)
    if req.get("MaxResults") is not None or req.get("NextToken"):
        # Token paging: the token is the offset of the next page.
        start = as_int("NextToken", req.get("NextToken"), 0)
        size = req.get("MaxResults") or 20
        if not 1 <= size <= 100:
            raise ApiError("InvalidParameterValue.Range", "MaxResults must be between 1 and 100.")
        chosen, token = subnets[start : start + size], str(start + size) if start + size < len(subnets) else ""
        return {"TotalCount": len(subnets), "SubnetSet": [subnet_view(s, backend) for s in chosen], "NextToken": token}
    return {"TotalCount": len(subnets), "SubnetSet": [subnet_view(s, backend) for s in page(subnets, req)]}


@action("vpc", VERSION, "CreateVpc")
def create_vpc(req: Request) -> dict[str, Any]:
    if req.get("StackType") == "IPv6Only" or req.get("Ipv6CidrBlock"):
        raise ApiError("UnsupportedOperation", "The sandbox's VPCs are IPv4 only (they live on 127.0.0.0/8).")
    if not req.get("CidrBlock"):
        raise ApiError("MissingParameter", "The request is missing a required parameter `CidrBlock`.")
    vpc = vpc_backend(req).create_vpc(
        req.region,
        req.params["VpcName"],
        req.params["CidrBlock"],
        tags_of(req),
        dns_servers=req.get("DnsServers"),
        domain_name=req.get("DomainName") or "",
        enable_multicast=str(req.get("EnableMulticast") or "false").lower() == "true",
    )
    return {"Vpc": vpc_view(vpc)}


@action("vpc", VERSION, "CreateSubnet")
def create_subnet(req: Request) -> dict[str, Any]:
    if req.get("CdcId") or req.get("Ipv6CidrBlock") or req.get("StackType") == "IPv6Only":
        raise ApiError("UnsupportedOperation", "The sandbox's subnets are IPv4 only and never on a CDC.")
    if not req.get("CidrBlock"):
        raise ApiError("MissingParameter", "The request is missing a required parameter `CidrBlock`.")
    backend = vpc_backend(req)
    subnet = backend.create_subnet(
        req.region,
        req.params["VpcId"],
        req.params["SubnetName"],
        req.params["Zone"],
        req.params["CidrBlock"],
        tags_of(req),
    )
    return {"Subnet": subnet_view(subnet, backend)}


# ---- Security groups --------------------------------------------------------------------------
def group_view(group: SecurityGroup) -> dict[str, Any]:
    return {
        "SecurityGroupId": group.security_group_id,
        "SecurityGroupName": group.name,
        "SecurityGroupDesc": group.description,
        "ProjectId": str(group.project_id),
        "IsDefault": group.is_default,
        "CreatedTime": group.created_time,
        "UpdateTime": group.update_time,
        "TagSet": tag_list(group.tags),
    }


def policy_view(index: int, rule: SecurityGroupPolicy) -> dict[str, Any]:
    return {
        "PolicyIndex": index,
        "Protocol": rule.protocol,
        "Port": rule.port,
        "ServiceTemplate": {"ServiceId": "", "ServiceGroupId": ""},
        "CidrBlock": rule.cidr_block or "",
        "Ipv6CidrBlock": rule.ipv6_cidr_block or "",
        "SecurityGroupId": rule.security_group_id or "",
        "AddressTemplate": {"AddressId": "", "AddressGroupId": ""},
        "Action": rule.action,
        "PolicyDescription": rule.description,
        "ModifyTime": rule.modify_time,
    }


@action("vpc", VERSION, "CreateSecurityGroup")
def create_security_group(req: Request) -> dict[str, Any]:
    group = vpc_backend(req).create_security_group(
        req.region,
        req.params["GroupName"],
        req.params["GroupDescription"],
        as_int("ProjectId", req.get("ProjectId"), 0),
        tags_of(req),
    )
    return {"SecurityGroup": group_view(group)}


@action("vpc", VERSION, "DescribeSecurityGroups")
def describe_security_groups(req: Request) -> dict[str, Any]:
    backend = vpc_backend(req)
    ids = req.get("SecurityGroupIds") or []
    for ident in ids:
        backend.security_group(req.region, ident)  # malformed or unknown ids are errors here
    fields = {
        "security-group-id": exact(lambda g: g.security_group_id),
        "security-group-name": exact(lambda g: g.name),
        "project-id": exact(lambda g: str(g.project_id)),
    }
    groups = select(backend.security_groups(req.region), req, "SecurityGroupIds", lambda g: g.security_group_id, fields)
    order = req.get("OrderField")
    if order is not None:
        if order not in ("CreatedTime", "UpdateTime"):
            raise ApiError("InvalidParameterValue", "OrderField must be CreatedTime or UpdateTime.")
        direction = (req.get("OrderDirection") or "ASC").upper()
        if direction not in ("ASC", "DESC"):
            raise ApiError("InvalidParameterValue", "OrderDirection must be ASC or DESC.")
        key = (lambda g: g.created_time) if order == "CreatedTime" else (lambda g: g.update_time)
        groups.sort(key=key, reverse=direction == "DESC")
    return {"SecurityGroupSet": [group_view(g) for g in page(groups, req)], "TotalCount": len(groups)}


@action("vpc", VERSION, "DeleteSecurityGroup")
def delete_security_group(req: Request) -> dict[str, Any]:
    vpc_backend(req).delete_security_group(req.region, req.params["SecurityGroupId"])
    return {}


POLICY_FILTERS = ("security-group-id", "ip", "protocol-type", "port", "poly", "direction", "description")


def policy_matches(rule: SecurityGroupPolicy, direction: str, name: str, values: list[str]) -> bool:
    """One DescribeSecurityGroupPolicies filter against one rule."""
    upper = [v.upper() for v in values]
    if name == "security-group-id":
        return (rule.security_group_id or "") in values
    if name == "ip":
        return any(v in (rule.cidr_block or rule.ipv6_cidr_block or "") for v in values)
    if name == "protocol-type":
        return rule.protocol in upper
    if name == "port":
        return "ALL" in upper or any(v in rule.port for v in values)
    if name == "poly":
        return "ALL" in upper or rule.action in upper
    if name == "direction":
        return "ALL" in upper or ("INBOUND" if direction == "Ingress" else "OUTBOUND") in upper
    if name == "description":
        return any(v in rule.description for v in values)
    return False  # address-module / service-module: the sandbox has no parameter templates


def policy_filter(rule: SecurityGroupPolicy, direction: str, filters: list[dict[str, Any]]) -> bool:
    for f in filters:
        if f["Name"] not in (*POLICY_FILTERS, "address-module", "service-module"):
            raise ApiError("InvalidParameter.FilterInvalidKey", f"The filter `{f['Name']}` is not supported here.")
        if not policy_matches(rule, direction, f["Name"], [str(v) for v in f.get("Values") or []]):
            return False
    return True


@action("vpc", VERSION, "DescribeSecurityGroupPolicies")
def describe_security_group_policies(req: Request) -> dict[str, Any]:
    group = vpc_backend(req).security_group(req.region, req.params["SecurityGroupId"])
    filters = req.get("Filters") or []
    views = {
        direction: [
            policy_view(i, r) for i, r in enumerate(group.rules(direction)) if policy_filter(r, direction, filters)
        ]
        for direction in ("Ingress", "Egress")
    }
    return {
        "SecurityGroupPolicySet": {
            "Version": str(group.version),
            "Egress": views["Egress"],
            "Ingress": views["Ingress"],
            "PolicyStatistics": {
                "IngressIPv4TotalCount": sum(not r.ipv6_cidr_block for r in group.ingress),
                "IngressIPv6TotalCount": sum(bool(r.ipv6_cidr_block) for r in group.ingress),
                "EgressIPv4TotalCount": sum(not r.ipv6_cidr_block for r in group.egress),
                "EgressIPv6TotalCount": sum(bool(r.ipv6_cidr_block) for r in group.egress),
            },
        }
    }


def one_direction(policy_set: dict[str, Any]) -> tuple[str, list[dict[str, Any]], int | None]:
    """A request's SecurityGroupPolicySet → (direction, its rules, Version); one direction per request."""
    given = [d for d in ("Ingress", "Egress") if policy_set.get(d)]
    if len(given) > 1:
        raise ApiError("InvalidParameter.Coexist", "Ingress and Egress cannot be given in one request.")
    if not given:
        raise ApiError("MissingParameter", "SecurityGroupPolicySet needs Ingress or Egress rules.")
    version = policy_set.get("Version")
    return given[0], policy_set[given[0]], None if version in (None, "") else as_int("Version", version, 0)


@action("vpc", VERSION, "CreateSecurityGroupPolicies")
def create_security_group_policies(req: Request) -> dict[str, Any]:
    direction, rules, version = one_direction(req.params["SecurityGroupPolicySet"])
    vpc_backend(req).add_policies(req.region, req.params["SecurityGroupId"], direction, rules, version)
    return {}


@action("vpc", VERSION, "DeleteSecurityGroupPolicies")
def delete_security_group_policies(req: Request) -> dict[str, Any]:
    direction, rules, version = one_direction(req.params["SecurityGroupPolicySet"])
    vpc_backend(req).delete_policies(req.region, req.params["SecurityGroupId"], direction, rules, version)
    return {}
