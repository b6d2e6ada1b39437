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
