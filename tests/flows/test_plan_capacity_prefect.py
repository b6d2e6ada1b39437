"""plan-capacity with `lunch_peak_by: prefect`: the plan written as the schedules of the tier's set-capacity deployment
(`set-capacity/lunch-peak-<tier>`) on a real Prefect API, never as Auto Scaling scheduled actions; only the plan's
own schedules replaced and the fixed peak's paused, the operator's left; a failed apply restores what it replaced; a
run killed mid-apply (in either place) is undone by cleanup-run of its key; and the Prefect mode end to end (slow)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate

from flows.autoscaling_steps.capacity_schedules import capacity_schedule, deployment_name, full_deployment_name
from flows.capacity_plan_steps import apply
from flows.capacity_plan_steps.forecast import BEIJING
from flows.capacity_plan_steps.history import PlanInputError
from flows.capacity_plan_steps.kept import kept_changes
from flows.capacity_plan_steps.prefect_schedules import converge, deployment_schedules, slug, wanted_schedules
from flows.capacity_plan_steps.steps import CapacityStep, servers_at
from flows.cleanup_run import Removed, cleanup_run
from flows.configure_autoscaling import configure_autoscaling
from flows.declaration import load_declaration
from flows.entrypoints import capacity
from flows.parameters import BusinessAutoScalingParameters, CapacityPlanParameters, CleanupParameters
from flows.plan_capacity import apply_plan, plan_capacity, preflight
from flows.run_forms import CapacityForm
from flows.scale_out import scale_out_cluster
from flows.shared.tier_run import TierRun
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks import autoscaling_policies as policies
from tasks.autoscaling_launch_configurations import create_launch_configuration
from tasks.cloud import CloudError, call_json, clients_for
from tests.flows.autoscaling_support import advance_to, at, autoscaling_params, sandbox_now, settle, through_the_clb
from tests.flows.support import cluster_params
from tests.flows.test_plan_capacity import EVENING, LUNCH
from tests.tasks.test_autoscaling_tasks import REGION
from tests.tasks.test_monitor import public_clb

BEFORE = [  # the deployment as deployed: the fixed peak, an operator's own schedule, a plan from an earlier run
    capacity_schedule("45 10 * * *", "peak-out", "business", "+2", 20),
    capacity_schedule("0 13 * * *", "peak-in", "business", "-2", 20),
    capacity_schedule("0 9 * * 6", "saturday-sale", "business", "+1", 30),
    capacity_schedule("0 3 * * *", "plan-daily-0300", "business", "1", 20),
]
# 15 days of history are enough; one server's load given (not measured: no servers); a few steps a day
ASKED = CapacityPlanParameters(
    tier="business", history_days=14, connections_per_server=10, hourly_price=0.2, max_steps=3
)


@pytest.fixture
def lunch_peak_business(prefect_harness: None) -> Iterator[None]:
    """`set-capacity/lunch-peak-business` on the Prefect API with the schedules BEFORE; deleted after the test."""
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("set-capacity")
        schedules = [DeploymentScheduleCreate.from_schedule(s) for s in BEFORE]
        deployment_id = client.create_deployment(flow_id, deployment_name("business"), schedules=schedules)
    yield
    with get_client(sync_client=True) as client:
        client.delete_deployment(deployment_id)


def schedules_now() -> dict[str, tuple[str, bool, str]]:
    """slug -> (cron, active, capacity) of the deployment's schedules."""
    _, found = deployment_schedules("business")
    return {
        s.slug or "": (getattr(s.schedule, "cron", ""), s.active, s.parameters["params"]["capacity"]) for s in found
    }


def planned_group(sandbox: EmbeddedSandbox) -> asg.Group:
    """The business tier's scaling group (no servers) behind a public CLB listener on 80, with 15 days of history
    and a plan action an earlier `lunch_peak_by: autoscaling` plan left."""
    lb_id, _ = public_clb(sandbox)
    (listener,) = call_json(clients_for(REGION).clb, "DescribeListeners", {"LoadBalancerId": lb_id})["Listeners"]
    lc, _ = create_launch_configuration.fn(REGION, "t-lc", {"ImageId": "img-l8og963d", "InstanceType": "S5.SMALL2"}, {})
    subnet = next(s for s in call_json(clients_for(REGION).vpc, "DescribeSubnets", {})["SubnetSet"] if s["IsDefault"])
    group, _ = asg.create_group.fn(REGION, "tcscale-business", {
        "LaunchConfigurationId": lc.launch_configuration_id, "MinSize": 0, "MaxSize": 4,
        "VpcId": subnet["VpcId"], "SubnetIds": [subnet["SubnetId"]],
        "ForwardLoadBalancers": [{"LoadBalancerId": lb_id, "ListenerId": listener["ListenerId"],
                                  "TargetAttributes": [{"Port": 8080, "Weight": 10}]}],
    }, {})  # fmt: skip
    sandbox.admin("POST", "monitor/history", {"profile": "lunch-and-evening", "days": 15, "seed": 3,
                                              "load_balancer_id": lb_id})  # fmt: skip
    leftover = {"daily": [CapacityStep(minute=0, servers=1)]}
    for action in apply.wanted_actions("business", leftover, 4, datetime.now(BEIJING)):
        policies.put_scheduled_action.fn(REGION, group.group_id, action)
    return group


def action_names(group_id: str) -> list[str]:
    return sorted(a.name for a in policies.scheduled_actions(REGION, group_id))


def declare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lunch_peak_by: str) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(f"capacity_plan: forecast\nlunch_peak_by: {lunch_peak_by}\n")
    monkeypatch.setenv("TCSCALE_CLUSTER_FILE", str(cluster))


def test_the_plan_goes_to_the_place_the_declaration_names_and_a_failed_apply_restores_it(
    cloud_env: EmbeddedSandbox, lunch_peak_business: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare(tmp_path, monkeypatch, "prefect")
    group = planned_group(cloud_env)
    before, leftover = schedules_now(), action_names(group.group_id)

    dry = plan_capacity(ASKED.model_copy(update={"dry_run": True}))
    kinds = {" ".join(d.split(" ")[:3]) for d in dry.differences}
    assert kinds == {"create Prefect schedule", "modify Prefect schedule", "delete Prefect schedule",
                     "delete scheduled action"}, dry.differences  # fmt: skip
    assert any("peak-out" in d and d.endswith("(paused)") for d in dry.differences)
    assert (schedules_now(), action_names(group.group_id)) == (before, leftover), "a dry run writes nothing"

    # the fixed peak's Auto Scaling actions would fire beside the plan: refused until configure-autoscaling removes them
    peak = apply.wanted_actions("business", {"daily": [CapacityStep(minute=645, servers=3)]}, 4, datetime.now(BEIJING))
    policies.put_scheduled_action.fn(
        REGION, group.group_id, peak[0].model_copy(update={"name": "tcscale-business-peak-out"})
    )
    with pytest.raises(PlanInputError, match=r"tcscale-business-peak-out.*configure-autoscaling"):
        plan_capacity(ASKED)
    policies.delete_scheduled_action.fn(REGION, group.group_id, "tcscale-business-peak-out")

    # a failed apply (the Auto Scaling leftover's deletion, after the schedules were written) restores them
    fault = {"service": "as", "action": "DeleteScheduledAction", "error_code": "InvalidParameterValue", "count": 1}
    cloud_env.admin("POST", "faults", fault)
    keyed = ASKED.model_copy(update={"business": ASKED.business.model_copy(update={"run_key": "failed-plan"})})
    with pytest.raises(CloudError, match="DeleteScheduledAction"):
        plan_capacity(keyed)
    assert (schedules_now(), action_names(group.group_id)) == (before, leftover)
    assert kept_changes("failed-plan") == [], "its own undo complete: nothing kept for a cleanup-run"

    outcome = plan_capacity(ASKED)
    assert "set-capacity/lunch-peak-business" in outcome.schedules_in and outcome.differences == dry.differences
    assert kept_changes(outcome.run_key) == [], "a finished plan keeps nothing for a cleanup-run"
    steps = outcome.plans.get("daily") or outcome.plans["weekday"]
    assert len(steps) >= 2 and max(s.servers for s in steps) > steps[0].servers, steps  # peaks above the night
    after = schedules_now()
    assert after["saturday-sale"] == before["saturday-sale"], "the operator's schedule is left as it was"
    assert (after["peak-out"], after["peak-in"]) == (("45 10 * * *", False, "+2"), ("0 13 * * *", False, "-2"))
    days = {"daily": "*", "weekday": "1-5", "weekend": "0,6"}
    assert {k: v for k, v in after.items() if k.startswith("plan-")} == {
        f"plan-{kind}-{s.at().replace(':', '')}": (f"{s.minute % 60} {s.minute // 60} * * {days[kind]}", True,
                                                   str(s.servers))
        for kind, planned in outcome.plans.items() for s in planned
    }  # fmt: skip
    assert action_names(group.group_id) == [], "no Auto Scaling scheduled action in Prefect mode; the leftover removed"

    # declared Auto Scaling's: the plan becomes scheduled actions, its Prefect schedules go, the rest stays
    declare(tmp_path, monkeypatch, "autoscaling")
    moved = plan_capacity(ASKED)
    assert "Auto Scaling" in moved.schedules_in
    assert schedules_now() == {k: v for k, v in after.items() if not k.startswith("plan-")}
    written = action_names(group.group_id)
    assert len(written) == sum(len(planned) for planned in moved.plans.values())
    assert all(name.startswith(apply.prefix("business")) for name in written)


def test_the_schedules_converge_once_and_the_undo_leaves_what_someone_changed_since(
    cloud_env: EmbeddedSandbox, lunch_peak_business: None
) -> None:
    before = schedules_now()
    plans = {"daily": [CapacityStep(minute=0, servers=1), CapacityStep(minute=11 * 60 + 15, servers=3)]}
    wanted = wanted_schedules("business", plans, 20)
    run = TierRun("plan-capacity", "business", BusinessAutoScalingParameters(run_key="p1"), 1)
    assert len(converge(run, wanted, pause_peak=True)) == 5  # 2 created, 2 paused, plan-daily-0300 deleted
    assert converge(run, wanted, pause_peak=True) == [], "what the server holds equals what the plan asks"
    with get_client(sync_client=True) as client:  # the operator edits one of the plan's schedules
        deployment_id, found = deployment_schedules("business")
        edited = next(s for s in found if s.slug == "plan-daily-1115")
        edited.parameters["params"]["capacity"] = "4"
        client.update_deployment_schedule(deployment_id, edited.id, parameters=edited.parameters)
    outcomes = {u.what.split(":")[0]: u.outcome for u in run.ledger.undo_all()}
    assert outcomes[f"create Prefect schedule plan-daily-1115 of {full_deployment_name('business')}"] == "left"
    assert schedules_now() == {**before, "plan-daily-1115": ("15 11 * * *", True, "4")}


def test_prefect_mode_refuses_without_the_deployment(
    cloud_env: EmbeddedSandbox, prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before any change, naming the deployment and the fixes."""
    declare(tmp_path, monkeypatch, "prefect")
    with pytest.raises(PlanInputError) as refused:
        plan_capacity(ASKED)
    assert "no deployment set-capacity/lunch-peak-business" in str(refused.value)
    assert "prefect deploy --all" in str(refused.value) and "lunch_peak_by: autoscaling" in str(refused.value)


def crash_mid_apply(key: str, plans: dict[str, list[CapacityStep]], fault: dict[str, object], sandbox: EmbeddedSandbox):
    """plan-capacity's apply, its process killed where the sandbox fails a request: what it wrote before stays and
    no undo of its own runs (the ledger dies with the process)."""
    run = TierRun("plan-capacity", "business", BusinessAutoScalingParameters(run_key=key), 1)
    where = preflight(ASKED, load_declaration(), REGION)
    sandbox.admin("POST", "faults", {"service": "as", "error_code": "InvalidParameterValue", "count": 1, **fault})
    with pytest.raises(CloudError):
        apply_plan(run, where, plans, datetime.now(BEIJING), 20)


def cleanup(key: str, dry_run: bool = False) -> Removed:
    return cleanup_run(CleanupParameters(run_key=key, region=REGION, restore_configs=False, dry_run=dry_run))


def test_a_plan_killed_mid_apply_is_undone_by_cleanup_run_exactly(
    cloud_env: EmbeddedSandbox, lunch_peak_business: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cleanup-run of a killed plan-capacity finds what it wrote by the run key alone and undoes exactly that, in either
    place; the fixed peak is resumed only by the cleanup of the run that paused it; a schedule edited since is left."""
    declare(tmp_path, monkeypatch, "prefect")
    group = planned_group(cloud_env)
    before, leftover = schedules_now(), action_names(group.group_id)
    plans = {"weekday": [CapacityStep(minute=0, servers=1), CapacityStep(minute=675, servers=3)],
             "weekend": [CapacityStep(minute=0, servers=1)]}  # fmt: skip
    # killed once the schedules were written (the peak paused, the earlier plan's deleted), at the Auto Scaling leftover
    crash_mid_apply("killed-1", plans, {"action": "DeleteScheduledAction"}, cloud_env)
    written = schedules_now()
    assert set(written) == {"peak-out", "peak-in", "saturday-sale", "plan-weekday-0000", "plan-weekday-1115",
                            "plan-weekend-0000"} and not written["peak-out"][1], written  # fmt: skip
    assert action_names(group.group_id) == leftover
    with get_client(sync_client=True) as client:  # the operator edits one of the killed run's schedules
        deployment_id, found = deployment_schedules("business")
        edited = next(s for s in found if s.slug == "plan-weekend-0000")
        edited.parameters["params"]["capacity"] = "2"
        client.update_deployment_schedule(deployment_id, edited.id, parameters=edited.parameters)

    removed = cleanup("killed-1")
    assert schedules_now() == {**before, "plan-weekend-0000": ("0 0 * * 0,6", True, "2")}
    assert action_names(group.group_id) == leftover
    assert len(removed.schedules_restored) == 5, removed
    assert [u.what.split(":")[0] for u in removed.schedules_left] == [
        f"create Prefect schedule plan-weekend-0000 of {full_deployment_name('business')}"
    ]
    assert kept_changes("killed-1") == [], "cleaned up: nothing kept of it any more"

    # the fixed peak already paused (by an earlier plan): a killed run that found it so leaves it paused
    with get_client(sync_client=True) as client:
        deployment_id, found = deployment_schedules("business")
        for peak in (s for s in found if s.slug in ("peak-out", "peak-in")):
            client.update_deployment_schedule(deployment_id, peak.id, active=False, parameters=peak.parameters)
    paused = schedules_now()
    crash_mid_apply("killed-2", plans, {"action": "DeleteScheduledAction"}, cloud_env)
    assert kept_changes("killed-20") == [] and len(kept_changes("killed-2")) == 5, "the key matches exactly"
    crashed = schedules_now()
    planned = cleanup("killed-2", dry_run=True)
    assert len(planned.schedules_restored) == 4 and schedules_now() == crashed, "a dry run lists, changes nothing"
    cleanup("killed-2")
    assert schedules_now() == paused

    # Auto Scaling's scheduled actions: killed at the second creation; the first one goes, the rest stays
    declare(tmp_path, monkeypatch, "autoscaling")
    crash_mid_apply("killed-3", plans, {"action": "CreateScheduledAction", "skip": 1}, cloud_env)
    assert len(action_names(group.group_id)) == len(leftover) + 1
    assert len(cleanup("killed-3").schedules_restored) == 1 and action_names(group.group_id) == leftover
    assert schedules_now() == paused


@pytest.mark.slow  # ~25 s: a scale-out, configure-autoscaling, two plans and a day's seven set-capacity runs
def test_a_plan_in_prefect_schedules_has_capacity_healthy_before_each_peak_and_back_down_after(
    guide: dict[str, Any],
    cloud_env: EmbeddedSandbox,
    lunch_peak_business: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prefect mode end to end: four weeks of a lunch peak at 11:30-13:30 and an evening peak at 19:00-21:00; plan (a
    dry run writes nothing); the plan's schedules on set-capacity/lunch-peak-business, the fixed peak paused; then each
    planned slot's run of the deployment's flow in turn, with the schedule's parameters and the sandbox clock at the
    slot (as Prefect's scheduler starts them): the servers healthy behind the CLB before each peak, each step a floor
    the low CPU alarm keeps between the slots, and back down after."""
    region = guide["region"]
    declare(tmp_path, monkeypatch, "prefect")
    _, business = scale_out_cluster(cluster_params(guide, count=1))
    params = autoscaling_params(guide)
    params.tiers = ["business"]
    (configured,) = configure_autoscaling(params)
    group_id = configured.group_id or ""
    cloud_env.admin("POST", "monitor/history", {
        "profile": "lunch-and-evening", "days": 28, "seed": 3,
        "load_balancer_id": business.load_balancer_id, "auto_scaling_group_id": group_id,
    })  # fmt: skip
    asked = CapacityPlanParameters(tier="business", business=params.business, target_cpu=50)
    before = schedules_now()
    assert plan_capacity(asked.model_copy(update={"dry_run": True})).differences
    assert schedules_now() == before, "a dry run writes nothing"

    outcome = plan_capacity(asked)
    after = schedules_now()
    assert not after["peak-out"][1] and not after["peak-in"][1] and after["saturday-sale"] == before["saturday-sale"]
    planned = {s.slug: s for s in deployment_schedules("business")[1] if (s.slug or "").startswith("plan-")}
    assert set(planned) == {slug(kind, s) for kind, steps in outcome.plans.items() for s in steps}
    assert all(s.parameters["params"]["floor"] for s in planned.values())
    assert action_names(group_id) == [], "no Auto Scaling scheduled action in Prefect mode"

    now = sandbox_now(cloud_env)
    day = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    while "daily" not in outcome.plans and day.isoweekday() >= 6:
        day += timedelta(days=1)
    steps = outcome.plans.get("daily") or outcome.plans["weekday"]
    kind = "daily" if "daily" in outcome.plans else "weekday"
    firings = [(at(day, s.minute), planned[slug(kind, s)], s.servers) for s in steps]  # the day's slots, from 00:00
    group = asg.describe_group(region, group_id)
    assert group is not None
    listener, vip, port = group.forward[0], business.vip or "", params.business.load_balancer.listener_port
    base = servers_at(steps, 0)
    starts = {at(day, start): servers_at(steps, start) for start, _ in (LUNCH, EVENING)}
    assert all(peak > base for peak in starts.values()), steps
    overrides = params.business.model_dump(mode="json")
    for when, schedule, servers in firings:
        for begins in [b for b in starts if b <= when]:  # a peak begins before this slot
            peak = starts.pop(begins)
            serving = asg.describe_group(region, group_id)  # settled, all healthy, at the slot before
            assert sandbox_now(cloud_env) < begins, "the servers are healthy behind the CLB before the peak begins"
            assert serving is not None and serving.in_service >= peak > base, (begins, serving, steps)
            through_the_clb(vip, port)
        advance_to(cloud_env, when)
        capacity(CapacityForm.model_validate({**schedule.parameters["params"], "overrides": overrides}))
        settled = settle(region, group_id, listener, servers)
        assert settled.min_size == servers, "a floor: the low CPU alarm keeps the planned servers until the next slot"
    assert not starts, f"no slot after {starts}"
    assert servers_at(steps, EVENING[1] + 30) == base  # and back down after the evening peak: settled at base above
    through_the_clb(vip, port)
