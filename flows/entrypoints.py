"""The deployments' flows (prefect.yaml, `tcscale serve`): each takes its run form (flows/run_forms.py) as `params`,
turns it into the flow's full parameters and runs the flow of that name in this same flow run.

The flows of flows/scale_out.py, cleanup_run.py, ... take the full parameters; tests, the demo, the benchmarks,
`tcscale run` and `scale-out-cluster` (its tiers' subflows) call them directly.
"""

from __future__ import annotations

from prefect import flow

from flows.autoscaling_steps.outcome import AutoScalingOutcome
from flows.cleanup_run import Removed, cleanup_run
from flows.configure_autoscaling import configure_autoscaling
from flows.plan_capacity import PlanOutcome, plan_capacity
from flows.run_forms import (
    AutoScalingForm,
    BusinessScaleOutForm,
    CapacityForm,
    CleanupForm,
    ClusterScaleOutForm,
    PlanCapacityForm,
    SessionScaleOutForm,
)
from flows.scale_out import scale_out_business_tier, scale_out_cluster, scale_out_session_tier
from flows.set_capacity import set_capacity
from flows.shared.tier_run import TierOutcome
from flows.verify_autoscaling import verify_autoscaling


@flow(name=scale_out_cluster.name, description=scale_out_cluster.description)
def cluster(params: ClusterScaleOutForm) -> list[TierOutcome]:
    return scale_out_cluster.fn(params.parameters())


@flow(name=scale_out_session_tier.name, description=scale_out_session_tier.description)
def session_tier(params: SessionScaleOutForm) -> TierOutcome:
    return scale_out_session_tier.fn(params.parameters())


@flow(name=scale_out_business_tier.name, description=scale_out_business_tier.description)
def business_tier(params: BusinessScaleOutForm) -> TierOutcome:
    return scale_out_business_tier.fn(params.parameters())


@flow(name=cleanup_run.name, description=cleanup_run.description)
def cleanup(params: CleanupForm) -> Removed:
    return cleanup_run.fn(params.parameters())


@flow(name=configure_autoscaling.name, description=configure_autoscaling.description)
def autoscaling(params: AutoScalingForm) -> list[AutoScalingOutcome]:
    return configure_autoscaling.fn(params.parameters())


@flow(name=verify_autoscaling.name, description=verify_autoscaling.description)
def verify(params: AutoScalingForm) -> list[AutoScalingOutcome]:
    return verify_autoscaling.fn(params.parameters())


@flow(name=set_capacity.name, description=set_capacity.description)
def capacity(params: CapacityForm) -> AutoScalingOutcome:
    return set_capacity.fn(params.parameters())


@flow(name=plan_capacity.name, description=plan_capacity.description)
def plan(params: PlanCapacityForm) -> PlanOutcome:
    return plan_capacity.fn(params.parameters())
