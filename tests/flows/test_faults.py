"""Fault matrix of the scale-out flows: each step, each kind of fault, against the real engine and sandbox.

Every case ends one of two ways, both checked through the sandbox itself:
- success by retry (throttling, a busy CLB, a dropped SSH connection once): the run completes, once;
- a clean rollback: the sandbox holds exactly the instances, images, CLBs and security group
  policies it held before the run, and every business server's sdk.config is byte-identical, its
  app up with the original authServerUrl.
Faults come from the sandbox's admin API (`POST /_sandbox/faults`): API errors, asynchronous
failures (CREATEFAILED, LAUNCH_FAILED, a failed CLB task), guest faults (an app that fails to
(re)start) and SSH faults (the connection dropped at a command, an SFTP write refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from flows.parameters import Timeouts
from flows.scale_out import scale_out_business_tier, scale_out_session_tier
from sandbox.server import EmbeddedSandbox
from tests.flows.support import (
    SHORT,
    add_business_servers,
    assert_business_untouched,
    business_configs,
    business_params,
    canary_first,
    inventory,
    restart_fails,
    session_params,
)

Prepare = Callable[[EmbeddedSandbox, dict[str, Any]], list[dict[str, Any]]]


@dataclass
class Case:
    """One injected fault: the rules to add (or a `prepare` that makes them), and how the run must end."""

    tier: str
    faults: list[dict[str, Any]] = field(default_factory=list)
    prepare: Prepare | None = None
    error: str | None = None  # None: the run must succeed (by retry); else a text of the failure
    timeouts: Timeouts = field(default_factory=lambda: SHORT)


def throttled(service: str, action: str, count: int = 1, code: str = "RequestLimitExceeded") -> dict[str, Any]:
    return {"service": service, "action": action, "error_code": code, "count": count}


def async_failure(service: str, action: str, message: str) -> dict[str, Any]:
    return {"service": service, "action": action, "async_failure": message}


def canary_restart_fails(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> list[dict[str, Any]]:
    return [restart_fails(guide["business_server"]["instance_id"])]


def other_restart_fails(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> list[dict[str, Any]]:
    """Three business servers: the canary goes well, one of the two others fails."""
    add_business_servers(sandbox, guide, 2)
    return [restart_fails(canary_first(guide["region"])[1])]


def ssh_drops_once_then_other_fails(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> list[dict[str, Any]]:
    """The canary's restart loses its SSH connection once (a retry succeeds), then the other server fails."""
    add_business_servers(sandbox, guide, 1)
    canary, other = canary_first(guide["region"])
    return [{"service": "ssh", "action": f"{canary}/exec", "count": 1}, restart_fails(other)]


def slow_clb(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> list[dict[str, Any]]:
    """Realistic latencies, scaled down: a CLB takes 0.12 s to create, longer than the run will wait."""
    sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.02})
    return []


CASES: dict[str, Case] = {
    # Throttling and busy resources: retried with backoff, the run succeeds once.
    "throttled-describe-instances": Case("session", [throttled("cvm", "DescribeInstances", count=2)]),
    "throttled-create-image": Case("session", [throttled("cvm", "CreateImage")]),
    "throttled-run-instances": Case("session", [throttled("cvm", "RunInstances")]),
    "throttled-create-load-balancer": Case("session", [throttled("clb", "CreateLoadBalancer")]),
    "busy-register-targets": Case(
        "session", [throttled("clb", "RegisterTargets", code="FailedOperation.ResourceInOperating")]
    ),
    "throttled-security-group": Case("session", [throttled("vpc", "CreateSecurityGroupPolicies")]),
    "ssh-dropped-once-at-restart": Case("session", [{"service": "ssh", "action": "exec", "count": 1}]),
    "business-throttled-create-listener": Case("business", [throttled("clb", "CreateListener")]),
    # Terminal states: fail fast, roll back.
    "image-createfailed": Case(
        "session", [async_failure("cvm", "CreateImage", "disk snapshot failed")], error="CREATEFAILED"
    ),
    "server-launch-failed": Case(
        "session",
        [async_failure("cvm", "RunInstances", "ResourceInsufficient.ZoneSoldOut")],
        error="LAUNCH_FAILED: ResourceInsufficient.ZoneSoldOut",
    ),
    "clb-create-task-failed": Case(
        "session", [async_failure("clb", "CreateLoadBalancer", "vip allocation failed")], error="vip allocation"
    ),
    "clb-listener-task-failed": Case(
        "session", [async_failure("clb", "CreateListener", "listener rule sync failed")], error="listener rule sync"
    ),
    "clb-register-task-failed": Case(
        "session", [async_failure("clb", "RegisterTargets", "rs binding failed")], error="rs binding"
    ),
    "security-group-internal-error": Case(
        "session",
        [{"service": "vpc", "action": "CreateSecurityGroupPolicies", "error_code": "InternalError"}],
        error="InternalError",
    ),
    "business-clb-create-task-failed": Case(
        "business", [async_failure("clb", "CreateLoadBalancer", "vip allocation failed")], error="vip allocation"
    ),
    "clb-create-timed-out": Case(
        "session", prepare=slow_clb, error="timed out", timeouts=SHORT.model_copy(update={"clb": 0.05})
    ),
    # SSH: the connection dropped at every command; the SFTP write refused.
    "ssh-dropped-at-every-restart": Case(  # the servers' reach check retries a dropped connection until its deadline
        "session",
        [{"service": "ssh", "action": "exec"}],
        error="lost its SSH connection",
        timeouts=SHORT.model_copy(update={"health": 4}),
    ),
    "sftp-write-refused": Case(
        "session",
        [{"service": "ssh", "action": "write", "error_message": "No space left on device"}],
        error="cannot back up",
    ),
    "ssh-dropped-once-then-other-server-fails": Case(
        "session", prepare=ssh_drops_once_then_other_fails, error="did not restart"
    ),
    # A failed restart: on the canary, on another server after the canary went well.
    "canary-restart-failed": Case("session", prepare=canary_restart_fails, error="did not restart"),
    "other-restart-failed": Case("session", prepare=other_restart_fails, error="did not restart"),
    # A failed health check: the new servers' app does not come up from the image.
    "session-auth-service-down": Case(
        "session",
        [{"service": "guest", "action": "mina_auth.start", "error_message": "mina_auth: port in use"}],
        error="healthy",
        timeouts=SHORT.model_copy(update={"health": 4}),
    ),
    "business-app-down-on-new-servers": Case(
        "business",
        [  # it crashes at boot and at each of pm2's restarts
            {"service": "guest", "action": "weapp.start", "error_message": "pm2: app crashed"},
            {"service": "guest", "action": "weapp.restart", "error_message": "pm2: app crashed"},
        ],
        error="business app",
        timeouts=SHORT.model_copy(update={"health": 4}),
    ),
}
SLOW = {"throttled-run-instances", "throttled-create-load-balancer", "throttled-security-group"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES])
def test_fault_ends_in_retry_success_or_clean_rollback(name: str, guide: dict[str, Any], cloud_env: EmbeddedSandbox):
    case = CASES[name]
    sandbox = cloud_env
    rules = list(case.faults) + (case.prepare(sandbox, guide) if case.prepare else [])
    before, configs = inventory(sandbox), business_configs(sandbox)
    for rule in rules:
        sandbox.admin("POST", "faults", rule)
    params = (session_params if case.tier == "session" else business_params)(guide, timeouts=case.timeouts)
    flow = scale_out_session_tier if case.tier == "session" else scale_out_business_tier
    try:
        if case.error is None:
            outcome = flow(params)
        else:
            with pytest.raises(Exception, match=case.error):
                flow(params)
    finally:
        fired = {r["action"]: r["fired"] for r in sandbox.admin("GET", "faults")}
        sandbox.admin("DELETE", "faults")
    assert all(fired.values()), f"a fault never fired: {fired}"
    after = inventory(sandbox)
    if case.error is None:
        made = set(after["instances"]) - set(before["instances"])
        assert made == set(outcome.new_instance_ids) and len(made) == 2, "exactly the servers asked for, no duplicate"
        assert len(after["load_balancers"]) == len(before["load_balancers"]) + 1
        return
    assert after == before, "the rollback left something behind (or took something away)"
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])
