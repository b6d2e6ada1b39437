"""CLB 2018-03-17 listener and target actions: CreateListener, DescribeListeners, DeleteListener,
Register/DeregisterTargets, DescribeTargets, DescribeTargetHealth (the rules live in the backend)."""

from typing import Any

from sandbox.clb.backend import TRANSPORT, HealthCheck, Listener, LoadBalancer, Target
from sandbox.clb.responses import VERSION, at_most, clb, in_range, name_length
from sandbox.core.errors import ApiError
from sandbox.core.registry import Request, action

PROTOCOLS = ("TCP", "UDP", "HTTP", "HTTPS", "TCP_SSL", "QUIC")
EMULATED_PROTOCOLS = ("TCP", "UDP", "HTTP")


# ---- listeners --------------------------------------------------------------------------------------


def health_check_from(params: dict[str, Any] | None, protocol: str) -> HealthCheck | None:
    if params is None:
        return None
    if protocol not in TRANSPORT:
        raise ApiError(
            "InvalidParameter.ProtocolCheckFailed", "HealthCheck applies to TCP/UDP listeners only: set it on rules."
        )
    check = HealthCheck(check_type="PING" if protocol == "UDP" else "TCP")
    check.health_switch = params.get("HealthSwitch", 1)
    if check.health_switch not in (0, 1):
        raise ApiError("InvalidParameterValue", "HealthCheck.HealthSwitch must be 0 or 1.")
    check.time_out = in_range("HealthCheck.TimeOut", params.get("TimeOut", 2), 2, 60)
    check.interval_time = in_range("HealthCheck.IntervalTime", params.get("IntervalTime", 5), 2, 300)
    check.health_num = in_range("HealthCheck.HealthNum", params.get("HealthNum", 3), 2, 10)
    check.un_health_num = in_range("HealthCheck.UnHealthNum", params.get("UnHealthNum", 3), 2, 10)
    if check.time_out >= check.interval_time:
        raise ApiError("InvalidParameterValue", "HealthCheck.TimeOut must be less than HealthCheck.IntervalTime.")
    check.check_type = params.get("CheckType", check.check_type)
    allowed = ("PING", "CUSTOM") if protocol == "UDP" else ("TCP", "HTTP", "CUSTOM")
    if check.check_type not in allowed:
        raise ApiError("InvalidParameterValue", f"HealthCheck.CheckType of a {protocol} listener is one of {allowed}.")
    if check.check_type == "HTTP":
        check.http_check_domain = params.get("HttpCheckDomain")
        if not check.http_check_domain:
            raise ApiError("InvalidParameter", "HealthCheck.HttpCheckDomain is required for an HTTP check.")
        check.http_check_path = params.get("HttpCheckPath", "/")
        check.http_code = in_range("HealthCheck.HttpCode", params.get("HttpCode", 31), 1, 31)
        check.http_check_method = params.get("HttpCheckMethod", "HEAD")
        check.http_version = params.get("HttpVersion", "HTTP/1.1")
    if "CheckPort" in params and params["CheckPort"] != -1:
        check.check_port = in_range("HealthCheck.CheckPort", params["CheckPort"], 1, 65535)
    return check


@action("clb", VERSION, "CreateListener")
def create_listener(req: Request) -> dict[str, Any]:
    p = req.params
    protocol = p["Protocol"]
    if protocol not in PROTOCOLS:
        raise ApiError("InvalidParameterValue", f"Protocol `{protocol}` must be one of {', '.join(PROTOCOLS)}.")
    if protocol not in EMULATED_PROTOCOLS:
        raise ApiError("UnsupportedOperation", f"The sandbox does not emulate {protocol} listeners.")
    ports = p["Ports"]
    if not ports:
        raise ApiError("MissingParameter", "Ports must list at least one port.")
    for port in ports:
        in_range("Ports", port, 1, 65535)
    if len(set(ports)) != len(ports):
        raise ApiError("InvalidParameterValue.Duplicate", "Ports lists a port more than once.")
    names = p.get("ListenerNames")
    if names is None:
        names = [""] * len(ports)
    elif len(names) != len(ports):
        raise ApiError("InvalidParameter", "ListenerNames must name every port of Ports, in order.")
    for name in names:
        if name:
            name_length("ListenerNames", name)
    scheduler = p.get("Scheduler", "WRR")
    if scheduler not in ("WRR", "LEAST_CONN"):
        raise ApiError("InvalidParameterValue", f"Scheduler `{scheduler}` must be WRR or LEAST_CONN.")
    if p.get("TargetType", "NODE") != "NODE":
        raise ApiError("UnsupportedOperation", "The sandbox emulates direct targets (TargetType NODE) only.")
    check = health_check_from(p.get("HealthCheck"), protocol)
    listeners = clb(req).create_listeners(
        req.region, req.request_id, req.async_failure, p["LoadBalancerId"], protocol, ports, names, check, scheduler
    )
    return {"ListenerIds": [listener.listener_id for listener in listeners]}


def health_check_view(check: HealthCheck) -> dict[str, Any]:
    return {
        "HealthSwitch": check.health_switch,
        "TimeOut": check.time_out,
        "IntervalTime": check.interval_time,
        "HealthNum": check.health_num,
        "UnHealthNum": check.un_health_num,
        "HttpCode": check.http_code,
        "HttpCheckPath": check.http_check_path,
        "HttpCheckDomain": check.http_check_domain,
        "HttpCheckMethod": check.http_check_method,
        "HttpVersion": check.http_version,
        "CheckPort": check.check_port,
        "ContextType": None,
        "SendContext": None,
        "RecvContext": None,
        "CheckType": check.check_type,
        "SourceIpType": 0,
        "ExtendedCode": None,
    }


def listener_view(listener: Listener) -> dict[str, Any]:
    layer4 = listener.protocol in TRANSPORT
    return {
        "ListenerId": listener.listener_id,
        "ListenerName": listener.listener_name,
        "Protocol": listener.protocol,
        "Port": listener.port,
        "EndPort": 0,
        "CreateTime": listener.created_time,
        "HealthCheck": health_check_view(listener.health_check) if layer4 else None,
        "Certificate": None,
        "Scheduler": listener.scheduler if layer4 else None,
        "SessionExpireTime": 0 if layer4 else None,
        "SniSwitch": 0,
        "Rules": None if layer4 else [],
        "TargetType": "NODE",
        "TargetGroup": None,
        "KeepaliveEnable": None if layer4 else 0,
        "SessionType": "NORMAL",
        "Toa": False,
        "DeregisterTargetRst": False,
        "AttrFlags": [],
        "TargetGroupList": None,
        "MaxConn": -1,
        "MaxCps": -1,
        "IdleConnectTimeout": 900 if listener.protocol == "TCP" else (300 if listener.protocol == "UDP" else None),
    }


def select_listeners(lb: LoadBalancer, params: dict[str, Any]) -> list[Listener]:
    listeners = sorted(lb.listeners.values(), key=lambda li: (li.created_time, li.port))
    if "ListenerIds" in params:
        listeners = [li for li in listeners if li.listener_id in params["ListenerIds"]]
    if "Protocol" in params:
        listeners = [li for li in listeners if li.protocol == params["Protocol"]]
    if "Port" in params:
        listeners = [li for li in listeners if li.port == params["Port"]]
    return listeners


@action("clb", VERSION, "DescribeListeners")
def describe_listeners(req: Request) -> dict[str, Any]:
    lb = clb(req).load_balancer(req.region, req.params["LoadBalancerId"])
    at_most("ListenerIds", req.get("ListenerIds") or [], 100)
    listeners = select_listeners(lb, req.params)
    return {"Listeners": [listener_view(li) for li in listeners], "TotalCount": len(listeners)}


@action("clb", VERSION, "DeleteListener")
def delete_listener(req: Request) -> dict[str, Any]:
    p = req.params
    clb(req).delete_listener(req.region, req.request_id, req.async_failure, p["LoadBalancerId"], p["ListenerId"])
    return {}


# ---- targets ----------------------------------------------------------------------------------------


def targets_from(params: dict[str, Any]) -> list[Target]:
    raw = params["Targets"]
    if not raw:
        raise ApiError("MissingParameter", "Targets must list at least one target.")
    at_most("Targets", raw, 20)
    targets, seen = [], set()
    for i, t in enumerate(raw):
        if t.get("EniIp"):
            raise ApiError("UnsupportedOperation", "The sandbox binds CVM instances only (InstanceId, not EniIp).")
        if not t.get("InstanceId"):
            raise ApiError("MissingParameter", f"The request is missing a required parameter `Targets.{i}.InstanceId`.")
        port = in_range(f"Targets.{i}.Port", t["Port"], 1, 65535)
        weight = in_range(f"Targets.{i}.Weight", t.get("Weight", 10), 0, 100)
        if (t["InstanceId"], port) in seen:
            raise ApiError("InvalidParameterValue.Duplicate", f"The target {t['InstanceId']}:{port} is repeated.")
        seen.add((t["InstanceId"], port))
        targets.append(Target(instance_id=t["InstanceId"], port=port, weight=weight))
    return targets


@action("clb", VERSION, "RegisterTargets")
def register_targets(req: Request) -> dict[str, Any]:
    p = req.params
    clb(req).register_targets(
        req.region,
        req.request_id,
        req.async_failure,
        p["LoadBalancerId"],
        p["ListenerId"],
        targets_from(p),
        p.get("LocationId"),
    )
    return {}


@action("clb", VERSION, "DeregisterTargets")
def deregister_targets(req: Request) -> dict[str, Any]:
    p = req.params
    pairs = [(t.instance_id, t.port) for t in targets_from(p)]
    clb(req).deregister_targets(
        req.region, req.request_id, req.async_failure, p["LoadBalancerId"], p["ListenerId"], pairs, p.get("LocationId")
    )
    return {}


def target_view(target: Target, instances: dict[str, Any]) -> dict[str, Any]:
    instance = instances.get(target.instance_id)
    return {
        "Type": "CVM",
        "InstanceId": target.instance_id,
        "Port": target.port,
        "Weight": target.weight,
        "PublicIpAddresses": [instance.public_ip] if instance is not None and instance.public_ip else None,
        "PrivateIpAddresses": [target.private_ip],
        "InstanceName": instance.instance_name if instance is not None else None,
        "RegisteredTime": target.registered_time,
        "EniId": "",
        "Tag": "",
        "Zone": instance.zone if instance is not None else None,
    }


TARGET_FILTERS = ("location-id", "private-ip-address", "tag")


@action("clb", VERSION, "DescribeTargets")
def describe_targets(req: Request) -> dict[str, Any]:
    lb = clb(req).load_balancer(req.region, req.params["LoadBalancerId"])
    at_most("ListenerIds", req.get("ListenerIds") or [], 20)
    wanted: dict[str, set[str]] = {}
    for f in req.get("Filters") or []:
        if f["Name"] not in TARGET_FILTERS:
            raise ApiError("InvalidParameterValue.InvalidFilter", f"The filter `{f['Name']}` is not supported.")
        wanted[f["Name"]] = set(f["Values"])
    cvm: Any = req.cloud.backends.get("cvm")
    instances = getattr(getattr(cvm, "state", None), "instances", {})
    answer = []
    for listener in select_listeners(lb, req.params):
        if "location-id" in wanted and listener.location_id not in wanted["location-id"]:
            continue
        targets = [
            t
            for t in listener.targets
            if ("private-ip-address" not in wanted or t.private_ip in wanted["private-ip-address"])
            and ("tag" not in wanted or "" in wanted["tag"])
        ]
        layer4 = listener.protocol in TRANSPORT
        answer.append(
            {
                "ListenerId": listener.listener_id,
                "Protocol": listener.protocol,
                "Port": listener.port,
                "Rules": None if layer4 else [],
                "Targets": [target_view(t, instances) for t in targets] if layer4 else None,
                "EndPort": 0,
            }
        )
    return {"Listeners": answer}


def target_health_view(listener: Listener, target: Target) -> dict[str, Any]:
    if listener.health_check.health_switch == 0:
        status, detail = True, "Close"  # no probing: traffic goes to every target
    elif target.healthy is None:
        status, detail = False, "Unknown"  # not probed yet
    else:
        status, detail = target.healthy, "Alive" if target.healthy else "Dead"
    return {
        "IP": target.private_ip,
        "Port": target.port,
        "HealthStatus": status,
        "TargetId": target.instance_id,
        "HealthStatusDetail": detail,
        "HealthStatusDetial": detail,
        "TargetGroupId": "",
        "Weight": target.weight,
    }


@action("clb", VERSION, "DescribeTargetHealth")
def describe_target_health(req: Request) -> dict[str, Any]:
    ids = at_most("LoadBalancerIds", req.params["LoadBalancerIds"], 30)
    listener_ids, location_ids = req.get("ListenerIds"), req.get("LocationIds")
    answer = []
    for lb_id in dict.fromkeys(ids):
        lb = clb(req).load_balancer(req.region, lb_id)
        listeners = []
        for listener in sorted(lb.listeners.values(), key=lambda li: (li.created_time, li.port)):
            if listener_ids is not None and listener.listener_id not in listener_ids:
                continue
            rules = []
            if listener.protocol in TRANSPORT and (location_ids is None or listener.location_id in location_ids):
                rules.append(
                    {
                        "LocationId": listener.location_id,
                        "Domain": None,
                        "Url": None,
                        "RuleId": "",
                        "Targets": [target_health_view(listener, t) for t in listener.targets],
                    }
                )
            listeners.append(
                {
                    "ListenerId": listener.listener_id,
                    "ListenerName": listener.listener_name,
                    "Protocol": listener.protocol,
                    "Port": listener.port,
                    "Rules": rules,
                }
            )
        answer.append(
            {"LoadBalancerId": lb.load_balancer_id, "LoadBalancerName": lb.load_balancer_name, "Listeners": listeners}
        )
    return {"LoadBalancers": answer}
