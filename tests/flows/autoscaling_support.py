"""Helpers of the Auto Scaling flow tests: parameters for the scaled guide, the sandbox clock in Beijing time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from flows.parameters import (
    AutoScalingClusterParameters,
    BusinessAutoScalingParameters,
    ServerSelector,
    SessionAutoScalingParameters,
)
from sandbox.server import EmbeddedSandbox
from tests.flows.support import cluster_params

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
