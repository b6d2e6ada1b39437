"""Scaling policies (placeholder until alarm evaluation lands)."""

from typing import TYPE_CHECKING

from sandbox.autoscaling.models import AsState

if TYPE_CHECKING:
    from sandbox.core.cloud import Cloud


class PolicyRules:
    state: AsState
    cloud: "Cloud"

    def evaluate_policies(self, now: float) -> float | None:
        return None
