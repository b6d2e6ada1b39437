"""CLB: the load balancer of a tier, its TCP listener, its targets and their health.

CLB writes are asynchronous (each returns a task, polled with DescribeTaskStatus) and collide
on one load balancer (`FailedOperation.ResourceInOperating`): writes to one CLB are serialised
here in-process, and retried with backoff across processes.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.cloud import call_json, clients_for, retrying
from tasks.waiters import wait_until

log = logging.getLogger("tcscale.clb")
CLEANUP_TIMEOUT = 60.0  # seconds a failed creation waits for its own deletion, even when the run's timeout is short
_write_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


class LoadBalancer(BaseModel):
    load_balancer_id: str
    name: str
    type: Literal["OPEN", "INTERNAL"]
    status: int
    vip: str | None = None
    vpc_id: str
    subnet_id: str | None = None
    project_id: int = 0
    tags: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> LoadBalancer:
        return cls(
            load_balancer_id=item["LoadBalancerId"],
            name=item.get("LoadBalancerName") or "",
            type=item["LoadBalancerType"],
            status=item["Status"],
            vip=(item.get("LoadBalancerVips") or [None])[0],
            vpc_id=item.get("VpcId") or "",
            subnet_id=item.get("SubnetId") or None,
            project_id=int(item.get("ProjectId") or 0),
            tags={t["TagKey"]: t["TagValue"] for t in item.get("Tags") or []},
        )


class Listener(BaseModel):
    listener_id: str
    port: int
    protocol: str
    name: str = ""


def listener_name(run_key: str, tier: str) -> str:
    """A run's listeners carry its key in their name: listeners have no tags, and cleanup must find them."""
    return f"tcscale-{tier}-{run_key}"


class HealthCheckSpec(BaseModel):
    """The listener's health check, as CreateListener takes it.

    HTTP (on the TCP listener) by default: a TCP check passes as soon as the web server accepts
    connections, even when the app behind it is down; an HTTP check on the app's health path does not.
    """

    check_type: Literal["TCP", "HTTP"] = "HTTP"
    http_check_path: str | None = Field(None, description="default: the tier's health path")
    http_check_domain: str = Field("localhost", description="Host header of the HTTP check (required on TCP)")
    interval_seconds: int = Field(5, ge=2, le=300)
    timeout_seconds: int = Field(2, ge=2, le=60)
    healthy_threshold: int = Field(3, ge=2, le=10)
    unhealthy_threshold: int = Field(3, ge=2, le=10)

    def api(self, default_path: str = "/") -> dict[str, Any]:
        check: dict[str, Any] = {
            "HealthSwitch": 1,
            "IntervalTime": self.interval_seconds,
            "TimeOut": self.timeout_seconds,
            "HealthNum": self.healthy_threshold,
            "UnHealthNum": self.unhealthy_threshold,
            "CheckType": self.check_type,
        }
        if self.check_type == "HTTP":
            check |= {
                "HttpCheckPath": self.http_check_path or default_path,
                "HttpCheckDomain": self.http_check_domain,
                "HttpCheckMethod": "GET",
                "HttpCode": 2,  # bit mask: 2xx only
                "HttpVersion": "HTTP/1.1",
            }
        return check


class TaskFailed(Exception):
    pass


def describe_load_balancer(region: str, load_balancer_id: str) -> LoadBalancer | None:
    answer = call_json(clients_for(region).clb, "DescribeLoadBalancers", {"LoadBalancerIds": [load_balancer_id]})
    found = answer["LoadBalancerSet"]
    return LoadBalancer.from_api(found[0]) if found else None


def load_balancers_serving(region: str, private_ips: list[str], type: str) -> list[LoadBalancer]:
    """The load balancers of `type` that have any of these servers (by private address) as a backend."""
    request = {"BackendPrivateIps": private_ips, "LoadBalancerType": type, "Limit": 100}
    answer = call_json(clients_for(region).clb, "DescribeLoadBalancers", request)
    return [LoadBalancer.from_api(item) for item in answer["LoadBalancerSet"]]


def wait_clb_task(region: str, timeout: float, poll: float = 1.0, task_id: str = "", deal_name: str = "") -> None:
    """Poll DescribeTaskStatus (by the write's RequestId, or a creation's DealName) until 0; 1 fails."""
    clb = clients_for(region).clb
    request = {"TaskId": task_id} if task_id else {"DealName": deal_name}
    wait_until(
        lambda: call_json(clb, "DescribeTaskStatus", request),
        done=lambda s: s["Status"] == 0,
        failed=lambda s: (s.get("Message") or "the CLB task failed (status 1)") if s["Status"] == 1 else None,
        what=f"CLB task {task_id or deal_name}",
        timeout=timeout,
        first_delay=min(poll, 0.1),
        max_delay=poll,
    )


@task(name="create-load-balancer", cache_policy=NO_CACHE)
@retrying()
def create_load_balancer(
    region: str,
    name: str,
    type: Literal["OPEN", "INTERNAL"],
    vpc_id: str,
    subnet_id: str | None,
    project_id: int,
    tags: dict[str, str],
    client_token: str,
    timeout: float,
) -> LoadBalancer:
    """Create (or, with the same ClientToken, adopt) a load balancer and wait until it is ready."""
    request: dict[str, Any] = {
        "LoadBalancerType": type,
        "LoadBalancerName": name,
        "VpcId": vpc_id,
        "ProjectId": project_id,
        "Tags": [{"TagKey": k, "TagValue": v} for k, v in tags.items()],
        "ClientToken": client_token,
    }
    if type == "INTERNAL":
        request["SubnetId"] = subnet_id
    created = call_json(clients_for(region).clb, "CreateLoadBalancer", request)
    try:
        wait_clb_task(region, timeout, deal_name=created["DealName"])
    except Exception:
        # A failed task stages no rollback hook: delete the load balancer this call made, then fail.
        _delete_quietly(region, created["LoadBalancerIds"][0], max(timeout, CLEANUP_TIMEOUT))
        raise
    balancer = describe_load_balancer(region, created["LoadBalancerIds"][0])
    if balancer is None:
        raise TaskFailed(f"load balancer {created['LoadBalancerIds'][0]} vanished after its creation succeeded")
    return balancer


def _delete_quietly(region: str, load_balancer_id: str, timeout: float) -> None:
    try:
        delete_load_balancer.fn(region, load_balancer_id, timeout)
    except Exception as error:
        log.error("could not delete load balancer %s after its creation failed: %s", load_balancer_id, error)


def _write(region: str, load_balancer_id: str, action: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One asynchronous CLB write, waited for; serialised per load balancer."""
    with _write_locks[load_balancer_id]:
        answer = call_json(clients_for(region).clb, action, {"LoadBalancerId": load_balancer_id, **request})
        wait_clb_task(region, timeout, task_id=answer["RequestId"])
        return answer


def listeners(region: str, load_balancer_id: str) -> list[dict[str, Any]]:
    answer = call_json(clients_for(region).clb, "DescribeListeners", {"LoadBalancerId": load_balancer_id})
    return answer["Listeners"]


@task(name="ensure-tcp-listener", cache_policy=NO_CACHE)
@retrying()
def ensure_tcp_listener(
    region: str, load_balancer_id: str, port: int, name: str, health: HealthCheckSpec, health_path: str, timeout: float
) -> Listener:
    """The TCP listener on `port`: adopt an existing one (the tier's, or this run's from an earlier attempt
    whose answer was lost), else create it named `name`."""
    existing = listener_on(region, load_balancer_id, port)
    if existing is None:
        request = {"Ports": [port], "Protocol": "TCP", "ListenerNames": [name], "HealthCheck": health.api(health_path)}
        answer = _write(region, load_balancer_id, "CreateListener", request, timeout)
        return Listener(listener_id=answer["ListenerIds"][0], port=port, protocol="TCP", name=name)
    if existing.protocol != "TCP":
        raise TaskFailed(
            f"{load_balancer_id} already listens on port {port} with {existing.protocol} "
            f"({existing.listener_id}): choose another listener port or remove that listener"
        )
    return existing


def listener_on(region: str, load_balancer_id: str, port: int) -> Listener | None:
    for item in listeners(region, load_balancer_id):
        if item["Port"] == port:
            return Listener(
                listener_id=item["ListenerId"],
                port=port,
                protocol=str(item["Protocol"]).upper(),
                name=item.get("ListenerName") or "",
            )
    return None


class Target(BaseModel, frozen=True):
    """One binding of a listener: a server on one backend port. A listener may send to several ports of one server
    (an operator's own bindings, say), so a binding is always this pair, never the server alone."""

    instance_id: str
    port: int

    def __str__(self) -> str:
        return f"{self.instance_id}:{self.port}"


def targets_on(instance_ids: list[str], port: int) -> list[Target]:
    return [Target(instance_id=i, port=port) for i in instance_ids]


def registered_targets(region: str, load_balancer_id: str, listener_id: str) -> set[Target]:
    """Every (instance, port) pair bound to the listener."""
    answer = call_json(
        clients_for(region).clb, "DescribeTargets", {"LoadBalancerId": load_balancer_id, "ListenerIds": [listener_id]}
    )
    return {
        Target(instance_id=t["InstanceId"], port=t["Port"])
        for item in answer["Listeners"]
        for t in item.get("Targets") or []
    }


@task(name="register-targets", cache_policy=NO_CACHE)
@retrying()
def register_targets(
    region: str, load_balancer_id: str, listener_id: str, targets: list[Target], timeout: float
) -> list[Target]:
    """Bind the pairs not bound yet; returns the ones this call bound."""
    bound = registered_targets(region, load_balancer_id, listener_id)
    new = [t for t in dict.fromkeys(targets) if t not in bound]
    for start in range(0, len(new), 20):  # RegisterTargets takes at most 20 targets a call
        batch = [{"InstanceId": t.instance_id, "Port": t.port, "Weight": 10} for t in new[start : start + 20]]
        _write(region, load_balancer_id, "RegisterTargets", {"ListenerId": listener_id, "Targets": batch}, timeout)
    return new


@task(name="deregister-targets", cache_policy=NO_CACHE)
@retrying()
def deregister_targets(
    region: str, load_balancer_id: str, listener_id: str, targets: list[Target], timeout: float
) -> list[Target]:
    """Unbind exactly these pairs (those still bound); the server's other ports on the listener stay."""
    bound = registered_targets(region, load_balancer_id, listener_id)
    gone = [t for t in dict.fromkeys(targets) if t in bound]
    for start in range(0, len(gone), 20):
        batch = [{"InstanceId": t.instance_id, "Port": t.port} for t in gone[start : start + 20]]
        _write(region, load_balancer_id, "DeregisterTargets", {"ListenerId": listener_id, "Targets": batch}, timeout)
    return gone


def target_health_of(region: str, load_balancer_id: str) -> dict[str, bool]:
    """{instance id: healthy} over every listener and port of the load balancer (healthy on one is enough)."""
    health: dict[str, bool] = {}
    for target, ok in target_health(region, load_balancer_id, None).items():
        health[target.instance_id] = health.get(target.instance_id, False) or ok
    return health


def target_health(region: str, load_balancer_id: str, listener_id: str | None) -> dict[Target, bool]:
    """{(instance, port): healthy} as the CLB sees it, on one listener (None: any; healthy on one is enough)."""
    answer = call_json(clients_for(region).clb, "DescribeTargetHealth", {"LoadBalancerIds": [load_balancer_id]})
    health: dict[Target, bool] = {}
    for balancer in answer["LoadBalancers"]:
        for listener in balancer.get("Listeners") or []:
            if listener_id is not None and listener["ListenerId"] != listener_id:
                continue
            for rule in listener.get("Rules") or []:
                for item in rule.get("Targets") or []:
                    target = Target(instance_id=item["TargetId"], port=item["Port"])
                    health[target] = health.get(target, False) or bool(item["HealthStatus"])
    return health


@task(name="wait-targets-healthy", cache_policy=NO_CACHE)
def wait_targets_healthy(
    region: str,
    load_balancer_id: str,
    listener_id: str,
    targets: list[Target],
    timeout: float,
    poll: float = 1.0,
    observe: Callable[[dict[Target, bool]], None] | None = None,
) -> dict[Target, bool]:
    """One DescribeTargetHealth per poll until every (instance, port) pair is healthy behind the listener. `observe`
    sees each poll's answer (a report's capacity chart)."""

    def state() -> dict[Target, bool]:
        health = target_health(region, load_balancer_id, listener_id)
        if observe is not None:
            observe(health)
        return health

    return wait_until(
        state,
        done=lambda health: all(health.get(t) for t in targets),
        failed=lambda _: None,  # unhealthy is not terminal: health checks need a few intervals
        what=f"{len(targets)} target(s) of {load_balancer_id}/{listener_id} to be healthy",
        timeout=timeout,
        first_delay=min(poll, 0.1),
        max_delay=poll,
    )


@task(name="delete-listener", cache_policy=NO_CACHE)
@retrying()
def delete_listener(region: str, load_balancer_id: str, listener_id: str, timeout: float) -> bool:
    if not any(item["ListenerId"] == listener_id for item in listeners(region, load_balancer_id)):
        return False
    _write(region, load_balancer_id, "DeleteListener", {"ListenerId": listener_id}, timeout)
    return True


@task(name="delete-load-balancer", cache_policy=NO_CACHE)
@retrying()
def delete_load_balancer(region: str, load_balancer_id: str, timeout: float) -> bool:
    if describe_load_balancer(region, load_balancer_id) is None:
        return False
    with _write_locks[load_balancer_id]:
        answer = call_json(clients_for(region).clb, "DeleteLoadBalancer", {"LoadBalancerIds": [load_balancer_id]})
        wait_clb_task(region, timeout, task_id=answer["RequestId"])
    return True


def tagged_load_balancers(region: str, tags: dict[str, str]) -> list[LoadBalancer]:
    """Every load balancer carrying all the tags (every page)."""
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    found: list[LoadBalancer] = []
    while True:
        request = {"Filters": filters, "Offset": len(found), "Limit": 100}
        page = call_json(clients_for(region).clb, "DescribeLoadBalancers", request)["LoadBalancerSet"]
        found += [LoadBalancer.from_api(item) for item in page]
        if len(page) < 100:
            return found


@task(name="delete-tagged-load-balancers", cache_policy=NO_CACHE)
@retrying()
def delete_tagged_load_balancers(region: str, tags: dict[str, str], timeout: float) -> list[str]:
    """Delete the load balancers carrying the tags (also one whose CreateLoadBalancer answer was lost)."""
    ids = [lb.load_balancer_id for lb in tagged_load_balancers(region, tags)]
    for load_balancer_id in ids:
        delete_load_balancer.fn(region, load_balancer_id, timeout)
    return ids


@task(name="delete-named-listeners", cache_policy=NO_CACHE)
@retrying()
def delete_named_listeners(region: str, load_balancer_id: str, name: str, timeout: float) -> list[str]:
    """Delete the listeners of one load balancer named exactly `name` (how a run's listeners are known)."""
    if describe_load_balancer(region, load_balancer_id) is None:
        return []
    ids = [item["ListenerId"] for item in listeners(region, load_balancer_id) if item.get("ListenerName") == name]
    for listener_id in ids:
        delete_listener.fn(region, load_balancer_id, listener_id, timeout)
    return ids


def all_load_balancers(region: str) -> list[LoadBalancer]:
    return tagged_load_balancers(region, {})
