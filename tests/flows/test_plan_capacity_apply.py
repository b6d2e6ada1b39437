"""plan-capacity's scheduled actions on a real (sandbox) scaling group: converged by name, each change in the undo
ledger first, undone exactly (an action someone changed since is left as it is), nobody else's action touched."""

from __future__ import annotations

from datetime import datetime, timedelta

from flows.capacity_plan_steps import apply
from flows.capacity_plan_steps.forecast import BEIJING
from flows.capacity_plan_steps.steps import CapacityStep
from flows.parameters import BusinessAutoScalingParameters
from flows.shared.tier_run import TierRun
from tasks import autoscaling as asg
from tasks import autoscaling_policies as policies
from tests.tasks.test_autoscaling_tasks import REGION, group


def action(name: str, hhmm: str, servers: int, now: datetime) -> asg.ScheduledAction:
    hour, minute = (int(p) for p in hhmm.split(":"))
    start = (now + timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return asg.ScheduledAction(
        name=name, min_size=servers, max_size=3, desired=servers, start_time=start.isoformat(),
        end_time=(start + timedelta(days=30)).isoformat(), recurrence=f"{minute} {hour} * * *",
    )  # fmt: skip


def listed(group_id: str) -> dict[str, asg.ScheduledAction]:
    return {a.name: a for a in policies.scheduled_actions(REGION, group_id)}


def test_the_plan_replaces_only_its_own_actions_and_its_undo_puts_them_back(cloud_env, prefect_harness):
    g = group()
    now = datetime.now(BEIJING)
    night, lunch = apply.prefix("business") + "daily-0000", apply.prefix("business") + "daily-1100"
    for made in (
        action("operators-own", "06:00", 1, now),
        action(night, "00:00", 1, now),
        action(lunch, "11:00", 3, now),
    ):
        policies.put_scheduled_action.fn(REGION, g.group_id, made)
    plans = {"daily": [CapacityStep(minute=0, servers=2), CapacityStep(minute=11 * 60 + 30, servers=3)]}
    wanted = apply.wanted_actions("business", plans, 3, now)

    planned = TierRun("plan-capacity", "business", BusinessAutoScalingParameters(run_key="p1", dry_run=True), 1)
    differences = apply.converge(planned, g, wanted, now)
    assert [d.split(":")[0] for d in differences] == [
        f"modify scheduled action {night}", "create scheduled action tcscale-business-plan-daily-1130",
        f"delete scheduled action {lunch} (no longer in the plan)",
    ]  # fmt: skip
    assert {a.desired for a in listed(g.group_id).values()} == {1, 3} and not planned.ledger.entries  # a dry run

    run = TierRun("plan-capacity", "business", BusinessAutoScalingParameters(run_key="p2"), 1)
    assert apply.converge(run, g, wanted, now) == differences and len(run.ledger.entries) == 3
    after = listed(g.group_id)
    assert set(after) == {"operators-own", night, "tcscale-business-plan-daily-1130"}
    assert (after[night].desired, after[night].min_size, after["tcscale-business-plan-daily-1130"].desired) == (2, 2, 3)
    assert apply.converge(run, g, wanted, now) == []  # applied: no difference left

    run.ledger.undo_all()
    undone = listed(g.group_id)
    assert set(undone) == {"operators-own", night, lunch}
    assert (undone[night].desired, undone[lunch].desired, undone["operators-own"].desired) == (1, 3, 1)

    # an action someone changed after the run is left as they made it
    again = TierRun("plan-capacity", "business", BusinessAutoScalingParameters(run_key="p3"), 1)
    apply.converge(again, g, wanted, now)
    policies.put_scheduled_action.fn(REGION, g.group_id, action(night, "00:00", 3, now))
    outcomes = {u.what.split(":")[0]: u.outcome for u in again.ledger.undo_all()}
    assert outcomes[f"modify scheduled action {night}"] == "left"
    assert listed(g.group_id)[night].desired == 3
