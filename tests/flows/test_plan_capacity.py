"""plan-capacity end to end on the sandbox: four weeks of history with a lunch peak at 11:30-13:30 and an evening
peak at 19:00-21:00, the plan written as scheduled actions, then a day on the sandbox clock with real requests
through the business tier's CLB: the planned servers healthy behind it before each peak begins, and gone after."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.capacity_plan_steps import apply
from flows.capacity_plan_steps.forecast import day_type as forecast_day_type
from flows.capacity_plan_steps.history import PlanInputError
from flows.capacity_plan_steps.steps import CapacityStep, servers_at
from flows.configure_autoscaling import configure_autoscaling
from flows.parameters import CapacityPlanParameters
from flows.plan_capacity import plan_capacity
from flows.scale_out import scale_out_cluster
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks import autoscaling_policies
from tests.flows.autoscaling_support import advance_to, at, autoscaling_params, sandbox_now, settle, through_the_clb
from tests.flows.support import cluster_params

LUNCH, EVENING = (11 * 60 + 30, 13 * 60 + 30), (19 * 60, 21 * 60)


def test_a_real_plan_needs_the_declaration_to_say_forecast_and_a_scaling_group(cloud_env, prefect_harness):
    """Refused before any change, naming both fixes (no declaration: the fixed lunch peak is what is declared)."""
    with pytest.raises(PlanInputError) as refused:
        plan_capacity(CapacityPlanParameters(tier="business"))
    assert "capacity_plan: forecast" in str(refused.value)
    assert "no scaling group tcscale-business" in str(refused.value) and "configure-autoscaling" in str(refused.value)


@pytest.mark.slow
def test_four_weeks_of_two_peaks_become_capacity_ready_before_each_peak(
    guide: dict[str, Any], cloud_env: EmbeddedSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    region = guide["region"]
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("capacity_plan: forecast\nlunch_peak_by: autoscaling\n")
    monkeypatch.setenv("TCSCALE_CLUSTER_FILE", str(cluster))
    _, business = scale_out_cluster(cluster_params(guide, count=1))
    params = autoscaling_params(guide)
    params.tiers = ["business"]
    (configured,) = configure_autoscaling(params)
    group_id = configured.group_id or ""
    assert not autoscaling_policies.scheduled_actions(region, group_id), "capacity_plan: forecast: no fixed peak"
    cloud_env.admin("POST", "monitor/history", {
        "profile": "lunch-and-evening", "days": 28, "seed": 3,
        "load_balancer_id": business.load_balancer_id, "auto_scaling_group_id": group_id,
    })  # fmt: skip

    asked = CapacityPlanParameters(tier="business", business=params.business, target_cpu=50)
    dry = plan_capacity(asked.model_copy(update={"dry_run": True}))
    assert dry.differences and all(d.startswith("create scheduled action") for d in dry.differences)
    assert not autoscaling_policies.scheduled_actions(region, group_id), "a dry run changes nothing"

    outcome = plan_capacity(asked)
    assert outcome.history_days >= 14 and outcome.per_server and "measured" in outcome.capacity_how
    assert "data:image/svg+xml;base64," in outcome.report and "a day's cost" in outcome.report
    written = {a.name: a for a in autoscaling_policies.scheduled_actions(region, group_id)}
    assert set(written) == {d.split(":")[0].removeprefix("create scheduled action ") for d in outcome.differences}
    assert all(a.name.startswith(apply.prefix("business")) for a in written.values())
    policies = {p.name for p in autoscaling_policies.alarm_policies(region, group_id)}
    assert policies == {"tcscale-business-cpu-high", "tcscale-business-cpu-low"}, "the alarms stay"
    assert plan_capacity(asked).differences == [], "the same history, the same plan: no change"

    # the day: every step fires in turn on the sandbox clock (one advance per firing, as the hours pass), real
    # requests go through the CLB at each peak's start and after it
    now = sandbox_now(cloud_env)
    day = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    while "daily" not in outcome.plans and day.isoweekday() >= 6:
        day += timedelta(days=1)
    steps: list[CapacityStep] = outcome.plans.get("daily") or outcome.plans["weekday"]
    firings = []
    moment = now.replace(hour=0, minute=0, second=0, microsecond=0)
    while moment <= day:
        kind = "daily" if "daily" in outcome.plans else forecast_day_type(moment)
        firings += [(at(moment, s.minute), s.servers) for s in outcome.plans[kind] if at(moment, s.minute) > now]
        moment += timedelta(days=1)
    group = asg.describe_group(region, group_id)
    assert group is not None
    listener, vip = group.forward[0], business.vip or ""
    port = params.business.load_balancer.listener_port
    base = servers_at(steps, 0)
    starts = {at(day, start): servers_at(steps, start) for start, _ in (LUNCH, EVENING)}
    assert all(peak > base for peak in starts.values()), steps
    for when, servers in sorted(firings):
        for begins in [b for b in starts if b <= when]:  # a peak begins before this step fires
            peak = starts.pop(begins)
            serving = asg.describe_group(region, group_id)
            assert sandbox_now(cloud_env) < begins, "settled (all healthy behind the CLB) before the peak begins"
            assert serving is not None and serving.in_service >= peak > base, (begins, serving, steps)
            through_the_clb(vip, port)
        advance_to(cloud_env, when)
        settle(region, group_id, listener, servers)
    assert not starts, f"no step after {starts}"
    assert servers_at(steps, EVENING[1] + 30) == base  # and back down after the evening peak: settled at base above
    through_the_clb(vip, port)
    members = asg.members(region, group_id)
    assert sorted(m.creation_type for m in members) == ["MANUAL_ATTACHING", "MANUAL_ATTACHING"], members
