"""CLB: the load balancer of a tier, its TCP listener, its targets and their health.

CLB writes are asynchronous (each returns a task, polled with DescribeTaskStatus) and collide
on one load balancer (`FailedOperation.ResourceInOperating`): writes to one CLB are serialised
here in-process, and retried with backoff across processes.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.cloud import call_json, clients_for, retrying
from tasks.transactions import recalled, remember
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
    created: bool = False


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


def find_load_balancers_by_tags(region: str, tags: dict[str, str]) -> list[LoadBalancer]:
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    answer = call_json(clients_for(region).clb, "DescribeLoadBalancers", {"Filters": filters, "Limit": 100})
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
    remember(region=region, load_balancer_id=created["LoadBalancerIds"][0], timeout=timeout)
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
    """The TCP listener on `port`: adopt an existing one, else create it."""
    for item in listeners(region, load_balancer_id):
        if item["Port"] == port:
            if item["Protocol"] != "TCP":
                raise TaskFailed(
                    f"{load_balancer_id} already listens on port {port} with {item['Protocol']} "
                    f"({item['ListenerId']}): choose another listener port or remove that listener"
                )
            return Listener(listener_id=item["ListenerId"], port=port, protocol="TCP")
    request = {"Ports": [port], "Protocol": "TCP", "ListenerNames": [name], "HealthCheck": health.api(health_path)}
    answer = _write(region, load_balancer_id, "CreateListener", request, timeout)
    listener_id = answer["ListenerIds"][0]
    remember(region=region, load_balancer_id=load_balancer_id, listener_id=listener_id, timeout=timeout)
    return Listener(listener_id=listener_id, port=port, protocol="TCP", created=True)


def registered_targets(region: str, load_balancer_id: str, listener_id: str) -> dict[str, int]:
    """{instance id: port} of the listener's targets."""
    answer = call_json(
        clients_for(region).clb, "DescribeTargets", {"LoadBalancerId": load_balancer_id, "ListenerIds": [listener_id]}
    )
    return {t["InstanceId"]: t["Port"] for item in answer["Listeners"] for t in item.get("Targets") or []}


@task(name="register-targets", cache_policy=NO_CACHE)
@retrying()
def register_targets(
    region: str, load_balancer_id: str, listener_id: str, instance_ids: list[str], port: int, timeout: float
) -> list[str]:
    """Bind servers to the listener; returns the ones this call bound (already-bound ones are skipped)."""
    bound = registered_targets(region, load_balancer_id, listener_id)
    new = [i for i in instance_ids if bound.get(i) != port]
    for start in range(0, len(new), 20):  # RegisterTargets takes at most 20 targets a call
        targets = [{"InstanceId": i, "Port": port, "Weight": 10} for i in new[start : start + 20]]
        _write(region, load_balancer_id, "RegisterTargets", {"ListenerId": listener_id, "Targets": targets}, timeout)
        remember(region=region, load_balancer_id=load_balancer_id, listener_id=listener_id, bound=new, timeout=timeout)
    return new


@task(name="deregister-targets", cache_policy=NO_CACHE)
@retrying()
def deregister_targets(
    region: str, load_balancer_id: str, listener_id: str, instance_ids: list[str], timeout: float
) -> list[str]:
    bound = registered_targets(region, load_balancer_id, listener_id)
    gone = [i for i in instance_ids if i in bound]
    for start in range(0, len(gone), 20):
        targets = [{"InstanceId": i, "Port": bound[i]} for i in gone[start : start + 20]]
        _write(region, load_balancer_id, "DeregisterTargets", {"ListenerId": listener_id, "Targets": targets}, timeout)
    return gone


def target_health(region: str, load_balancer_id: str, listener_id: str) -> dict[str, bool]:
    """{instance id: healthy} as the CLB sees it."""
    answer = call_json(clients_for(region).clb, "DescribeTargetHealth", {"LoadBalancerIds": [load_balancer_id]})
    health: dict[str, bool] = {}
    for balancer in answer["LoadBalancers"]:
        for listener in balancer.get("Listeners") or []:
            if listener["ListenerId"] != listener_id:
                continue
            for rule in listener.get("Rules") or []:
                for target in rule.get("Targets") or []:
                    health[target["TargetId"]] = bool(target["HealthStatus"])
    return health


@task(name="wait-targets-healthy", cache_policy=NO_CACHE)
def wait_targets_healthy(
    region: str, load_balancer_id: str, listener_id: str, instance_ids: list[str], timeout: float, poll: float = 1.0
) -> dict[str, bool]:
    """One DescribeTargetHealth per poll until every server is healthy behind the listener."""
    return wait_until(
        lambda: target_health(region, load_balancer_id, listener_id),
        done=lambda health: all(health.get(i) for i in instance_ids),
        failed=lambda _: None,  # unhealthy is not terminal: health checks need a few intervals
        what=f"{len(instance_ids)} target(s) of {load_balancer_id}/{listener_id} to be healthy",
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


@create_load_balancer.on_rollback
def _delete_created_load_balancer(txn) -> None:  # type: ignore[no-untyped-def]
    region, load_balancer_id, timeout = recalled(txn, "region", "load_balancer_id", "timeout")
    if load_balancer_id:
        delete_load_balancer.fn(region, load_balancer_id, timeout)


@ensure_tcp_listener.on_rollback
def _delete_created_listener(txn) -> None:  # type: ignore[no-untyped-def]
    region, load_balancer_id, listener_id, timeout = recalled(
        txn, "region", "load_balancer_id", "listener_id", "timeout"
    )
    if listener_id:
        delete_listener.fn(region, load_balancer_id, listener_id, timeout)


@register_targets.on_rollback
def _deregister_bound(txn) -> None:  # type: ignore[no-untyped-def]
    region, load_balancer_id, listener_id, bound, timeout = recalled(
        txn, "region", "load_balancer_id", "listener_id", "bound", "timeout"
    )
    if bound and describe_load_balancer(region, load_balancer_id) is not None:
        deregister_targets.fn(region, load_balancer_id, listener_id, bound, timeout)
