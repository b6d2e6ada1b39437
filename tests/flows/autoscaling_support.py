"""Helpers of the Auto Scaling flow tests: parameters for the scaled guide, the sandbox clock in Beijing time, a
group settled with its servers healthy behind the CLB, requests through it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from flows.parameters import (
    AutoScalingClusterParameters,
    BusinessAutoScalingParameters,
    ServerSelector,
    SessionAutoScalingParameters,
)
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks import clb
from tests.flows.support import cluster_params
from tests.sdk import poll

BEIJING = timezone(timedelta(hours=8))


def tier_selector(tier: str) -> ServerSelector:
    return ServerSelector(tag_key="tcscale:tier", tag_value=tier)


def autoscaling_params(guide: dict[str, Any], **scaling: Any) -> AutoScalingClusterParameters:
    """Both tiers of the (scaled) guide, found by their tier tag, with the tests' short timeouts."""
    cluster = cluster_params(guide)
    scaling.setdefault("activity_timeout", 60)
    tiers: dict[str, Any] = {}
    for name, tier, model in (
        ("session", cluster.session, SessionAutoScalingParameters),
        ("business", cluster.business, BusinessAutoScalingParameters),
    ):
        base = tier.model_dump(exclude={"ssh", "source"})
        tiers[name] = model.model_validate(
            {**base, "ssh": tier.ssh, "source": tier_selector(name), "autoscaling": scaling}
        )
    return AutoScalingClusterParameters(**tiers)


def sandbox_now(sandbox: EmbeddedSandbox) -> datetime:
    return datetime.fromisoformat(sandbox.admin("GET", "clock")["now"].replace("Z", "+00:00")).astimezone(BEIJING)


def advance_to(sandbox: EmbeddedSandbox, moment: datetime) -> None:
    seconds = (moment - sandbox_now(sandbox)).total_seconds()
    sandbox.admin("POST", "clock", {"advance": max(seconds, 0) + 1})


def minutes(sandbox: EmbeddedSandbox, n: float) -> None:
    sandbox.admin("POST", "clock", {"advance": 60 * n})


def cleanup_autoscaling(guide: dict[str, Any], key: str, dry_run: bool = False) -> Any:
    """cleanup-run of `key` for runs that changed only Auto Scaling (no sdk.config of this key: test_cleanup covers
    configs; the new servers' host keys are unknown)."""
    from flows.cleanup_run import cleanup_run
    from flows.parameters import CleanupParameters
    from tests.flows.support import BUSINESS_TAG, session_params, ssh_settings

    params = CleanupParameters(
        run_key=key,
        region=guide["region"],
        business_servers=BUSINESS_TAG,
        ssh=ssh_settings(guide),
        health=session_params(guide).health,
        timeout=60,
        dry_run=dry_run,
        restore_configs=False,
    )
    return cleanup_run(params)


def settle(region: str, group_id: str, listener: asg.ForwardLoadBalancer, servers: int) -> asg.Group:
    """The group settled at `servers`, every one of them healthy behind the CLB."""

    def read() -> tuple[asg.Group | None, int]:
        group = asg.describe_group(region, group_id)
        health = clb.target_health(region, listener.load_balancer_id, listener.listener_id)
        return group, sum(ok for target, ok in health.items() if target.port == listener.port)

    def done(seen: tuple[asg.Group | None, int]) -> bool:
        group, healthy = seen
        return group is not None and group.settled and group.desired == group.in_service == healthy == servers

    group, _ = poll(read, done, what=f"{group_id} at {servers} servers, all healthy", timeout=90)
    assert group is not None
    return group


def at(day: datetime, minute: int) -> datetime:
    return day.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)


def through_the_clb(vip: str, port: int, requests: int = 20) -> None:
    for _ in range(requests):  # a new connection each: the CLB spreads them over the serving servers
        assert httpx.get(f"http://{vip}:{port}/login", timeout=5).status_code == 200
