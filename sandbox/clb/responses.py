"""CLB 2018-03-17 load balancer and task actions (listeners and targets: `sandbox.clb.listener_actions`)."""

from typing import Any

from sandbox.clb.backend import ClbBackend, LoadBalancer
from sandbox.core.catalog import PROJECTS
from sandbox.core.errors import ApiError
from sandbox.core.query import apply_filters, paginate
from sandbox.core.registry import Request, action

VERSION = "2018-03-17"
PROTOCOLS = ("TCP", "UDP", "HTTP", "HTTPS", "TCP_SSL", "QUIC")
EMULATED_PROTOCOLS = ("TCP", "UDP", "HTTP")


def clb(req: Request) -> ClbBackend:
    return req.cloud.backends["clb"]  # type: ignore[return-value]


def in_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ApiError("InvalidParameterValue.Range", f"The value `{value}` of `{name}` must be in [{low}, {high}].")
    return value


def name_length(name: str, value: str) -> str:
    if not 1 <= len(value) <= 80:
        raise ApiError("InvalidParameterValue.Length", f"`{name}` must be 1 to 80 characters long.")
    return value


def at_most(name: str, values: list[Any], most: int) -> list[Any]:
    if len(values) > most:
        raise ApiError("LimitExceeded", f"`{name}` takes at most {most} items, got {len(values)}.")
    return values


def tag_view(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in tags.items()]


# ---- load balancers -------------------------------------------------------------------------------


@action("clb", VERSION, "CreateLoadBalancer")
def create_load_balancer(req: Request) -> dict[str, Any]:
    lb_type = req.params["LoadBalancerType"]
    if lb_type not in ("OPEN", "INTERNAL"):
        raise ApiError("InvalidParameterValue", f"LoadBalancerType `{lb_type}` must be OPEN or INTERNAL.")
    if req.get("Forward", 1) != 1:
        raise ApiError("InvalidParameterValue", "Forward only accepts 1.")
    subnet_id = req.get("SubnetId")
    if lb_type == "INTERNAL" and not subnet_id:
        raise ApiError("InvalidParameter", "SubnetId is required to create an INTERNAL load balancer.")
    if lb_type == "OPEN" and subnet_id:
        raise ApiError("InvalidParameterCombination", "SubnetId cannot be given for an OPEN IPv4 load balancer.")
    project_id = req.get("ProjectId", 0)
    if project_id not in PROJECTS:
        raise ApiError("InvalidParameterValue", f"The project `{project_id}` does not exist.")
    name = req.get("LoadBalancerName")
    if name is not None:
        name_length("LoadBalancerName", name)
    number = req.get("Number", 1)
    in_range("Number", number, 1, 20)
    token = req.get("ClientToken")
    if token is not None and not (0 < len(token) <= 64 and token.isascii()):
        raise ApiError("InvalidParameterValue.Length", "ClientToken must be 1 to 64 ASCII characters.")
    tags: dict[str, str] = {}
    for tag in at_most("Tags", req.get("Tags") or [], 20):
        if tag["TagKey"] in tags:
            raise ApiError("InvalidParameterValue.Duplicate", f"The tag key `{tag['TagKey']}` is repeated.")
        tags[tag["TagKey"]] = tag["TagValue"]
    bandwidth = (req.get("InternetAccessible") or {}).get("InternetMaxBandwidthOut", 10)
    in_range("InternetAccessible.InternetMaxBandwidthOut", bandwidth, 1, 2048)

    vpc: Any = req.cloud.backends["vpc"]
    vpc.ensure_defaults(req.region)
    subnet = vpc.subnet(req.region, subnet_id) if subnet_id else None
    # An omitted VpcId is the subnet's VPC (INTERNAL) or the region's default VPC (OPEN).
    vpc_id = req.get("VpcId") or (
        subnet.vpc_id
        if subnet is not None
        else next(v.vpc_id for v in vpc.state.vpcs.values() if v.region == req.region and v.is_default)
    )
    vpc.vpc(req.region, vpc_id)
    if subnet is not None and subnet.vpc_id != vpc_id:
        raise ApiError("InvalidParameterValue", f"The subnet `{subnet_id}` does not belong to VPC `{vpc_id}`.")

    task = clb(req).create_load_balancers(
        req.region,
        req.request_id,
        req.async_failure,
        lb_type,
        vpc_id,
        subnet_id,
        project_id,
        name,
        number,
        tags,
        bandwidth,
        token,
    )
    return {"LoadBalancerIds": task.load_balancer_ids, "DealName": task.deal_name}


def load_balancer_view(lb: LoadBalancer) -> dict[str, Any]:
    target_count = sum(len(listener.targets) for listener in lb.listeners.values())
    return {
        "LoadBalancerId": lb.load_balancer_id,
        "LoadBalancerName": lb.load_balancer_name,
        "LoadBalancerType": lb.load_balancer_type,
        "Forward": lb.forward,
        "Domain": "",
        "LoadBalancerDomain": "",
        "LoadBalancerVips": [lb.vip],
        "AddressIPVersion": "ipv4",
        "Status": lb.status,
        "CreateTime": lb.created_time,
        "StatusTime": lb.status_time or lb.created_time,
        "ProjectId": lb.project_id,
        "VpcId": lb.vpc_id,
        "SubnetId": lb.subnet_id or "",
        "OpenBgp": 0,
        "Snat": False,
        "Isolation": 0,
        "Log": "",
        "AnycastZone": "",
        "TargetRegionInfo": {"Region": lb.region, "VpcId": lb.vpc_id},
        "SecureGroups": [],
        "Tags": tag_view(lb.tags),
        "ChargeType": "POSTPAID_BY_HOUR",
        "NetworkAttributes": {
            "InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR",
            "InternetMaxBandwidthOut": lb.bandwidth_out if lb.load_balancer_type == "OPEN" else 0,
        },
        "VipIsp": "BGP" if lb.load_balancer_type == "OPEN" else "INTERNAL",
        "LoadBalancerPassToTarget": False,
        "IsDDos": False,
        "SnatPro": False,
        "SnatIps": [],
        "IsBlock": False,
        "IsBlockTime": "",
        "SlaType": "",
        "LocalBgp": False,
        "MixIpTarget": False,
        "AttributeFlags": [],
        "Egress": "",
        "TargetCount": target_count,
    }


# `Filters` of DescribeLoadBalancers (tag-key and tag:<key> are handled by apply_filters).
LB_FILTERS = {
    "charge-type": lambda lb: "POSTPAID_BY_HOUR",
    "internet-charge-type": lambda lb: "TRAFFIC_POSTPAID_BY_HOUR",
    "vip-isp": lambda lb: "BGP" if lb.load_balancer_type == "OPEN" else "INTERNAL",
    "exclusive": lambda lb: "0",
    "sla-type": lambda lb: [],
    "master-zone-id": lambda lb: [],
    "function-name": lambda lb: [],
}
ORDER_KEYS = {
    "CreateTime": lambda lb: lb.created_at,
    "LoadBalancerName": lambda lb: lb.load_balancer_name,
    "LoadBalancerType": lambda lb: lb.load_balancer_type,
    "Domain": lambda lb: "",
}


def backend_ips(lb: LoadBalancer, req: Request, public: bool) -> set[str]:
    cvm: Any = req.cloud.backends.get("cvm")
    instances = getattr(getattr(cvm, "state", None), "instances", {})
    ips = set()
    for listener in lb.listeners.values():
        for target in listener.targets:
            if not public:
                ips.add(target.private_ip)
            elif (instance := instances.get(target.instance_id)) is not None and instance.public_ip:
                ips.add(instance.public_ip)
    return ips


@action("clb", VERSION, "DescribeLoadBalancers")
def describe_load_balancers(req: Request) -> dict[str, Any]:
    p = req.params
    filters = at_most("Filters", p.get("Filters") or [], 10)
    for f in filters:
        name = f["Name"]
        if not (name in LB_FILTERS or name == "tag-key" or name.startswith("tag:")):
            raise ApiError("InvalidParameterValue.InvalidFilter", f"The filter `{name}` is not supported.")
    lbs = clb(req).load_balancers(req.region)
    if "LoadBalancerIds" in p:
        wanted = set(at_most("LoadBalancerIds", p["LoadBalancerIds"], 20))
        lbs = [lb for lb in lbs if lb.load_balancer_id in wanted]
    if "LoadBalancerType" in p:
        lbs = [lb for lb in lbs if lb.load_balancer_type == p["LoadBalancerType"]]
    if "Forward" in p and p["Forward"] != -1:
        lbs = [lb for lb in lbs if lb.forward == p["Forward"]]
    if "LoadBalancerName" in p:
        lbs = [lb for lb in lbs if p["LoadBalancerName"] in lb.load_balancer_name]  # fuzzy, as documented
    if "LoadBalancerVips" in p:
        lbs = [lb for lb in lbs if lb.vip in p["LoadBalancerVips"]]
    if "BackendPrivateIps" in p:
        lbs = [lb for lb in lbs if backend_ips(lb, req, public=False) & set(p["BackendPrivateIps"])]
    if "BackendPublicIps" in p:
        lbs = [lb for lb in lbs if backend_ips(lb, req, public=True) & set(p["BackendPublicIps"])]
    if "VpcId" in p:
        lbs = [lb for lb in lbs if lb.vpc_id == p["VpcId"]]
    if "ProjectId" in p:
        lbs = [lb for lb in lbs if lb.project_id == p["ProjectId"]]
    if p.get("WithRs", -1) in (0, 1):
        lbs = [lb for lb in lbs if any(li.targets for li in lb.listeners.values()) == bool(p["WithRs"])]
    if "SearchKey" in p:
        key = p["SearchKey"]
        lbs = [lb for lb in lbs if key in lb.load_balancer_name or key in lb.vip or key in lb.load_balancer_id]
    lbs = apply_filters(lbs, filters, LB_FILTERS, tags=lambda lb: lb.tags)
    order_by = p.get("OrderBy", "CreateTime")
    if order_by not in ORDER_KEYS:
        raise ApiError("InvalidParameterValue", f"OrderBy `{order_by}` is not supported.")
    lbs.sort(key=ORDER_KEYS[order_by], reverse=p.get("OrderType", 1) == 1)
    page = paginate(lbs, p.get("Offset"), p.get("Limit"))
    return {"TotalCount": len(lbs), "LoadBalancerSet": [load_balancer_view(lb) for lb in page]}


@action("clb", VERSION, "DeleteLoadBalancer")
def delete_load_balancer(req: Request) -> dict[str, Any]:
    ids = at_most("LoadBalancerIds", req.params["LoadBalancerIds"], 20)
    if not ids:
        raise ApiError("MissingParameter", "LoadBalancerIds must list at least one load balancer.")
    clb(req).delete_load_balancers(req.region, req.request_id, req.async_failure, ids)
    return {}


@action("clb", VERSION, "DescribeTaskStatus")
def describe_task_status(req: Request) -> dict[str, Any]:
    task_id, deal_name = req.get("TaskId"), req.get("DealName")
    if not task_id and not deal_name:  # a rule the API documents only in prose
        raise ApiError("MissingParameter", "The request is missing a required parameter `TaskId` or `DealName`.")
    task = clb(req).task(task_id, deal_name)
    creation = task.action == "CreateLoadBalancer"
    return {
        "Status": task.status,
        "LoadBalancerIds": task.load_balancer_ids if creation else None,
        "Message": task.message,
    }
