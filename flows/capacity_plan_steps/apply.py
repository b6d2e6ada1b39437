"""The plan as a scaling group's scheduled actions: one recurring action per step and day type, named
`tcscale-<tier>-plan-<days>-<HHMM>` (the name is the mark: scheduled actions take no tag).

Each action sets the desired capacity and the minimum to the step's servers, the maximum to the group's: the plan
is a floor the CPU alarms cannot take away, and they still add servers above it for load it did not foresee (the
guide's lunch-peak actions do the same with min + extra). The day's first step, at 00:00, puts the floor back to the
tier's base.
Every change is written to the run's undo ledger before it is made: a creation is undone by deleting it, a
modification by putting the earlier action back (only while the action still holds what this run wrote), a deletion
by creating the earlier action again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from flows.autoscaling_steps.plan import MIN_NOTICE, beijing, next_at
from flows.capacity_plan_steps.steps import CapacityStep
from flows.parameters import AutoScalingTierParameters
from flows.shared.tier_run import TierRun
from tasks import autoscaling as asg
from tasks import autoscaling_policies as policies

DAYS = {"daily": ("*", set(range(1, 8))), "weekday": ("1-5", {1, 2, 3, 4, 5}), "weekend": ("6,7", {6, 7})}
SAME = {"min_size", "max_size", "desired", "recurrence"}


def prefix(tier: str) -> str:
    return f"tcscale-{tier}-plan-"


def action_name(tier: str, kind: str, step: CapacityStep) -> str:
    return f"{prefix(tier)}{kind}-{step.at().replace(':', '')}"


def wanted_actions(
    tier: str, plans: dict[str, list[CapacityStep]], max_size: int, now: datetime
) -> list[asg.ScheduledAction]:
    """One recurring action per step of each day type's plan, the first firing at least MIN_NOTICE from now."""
    actions = []
    for kind, steps in plans.items():
        field, days = DAYS[kind]
        for step in steps:
            first = next_at(now + MIN_NOTICE, step.minute // 60, step.minute % 60, days)
            actions.append(
                asg.ScheduledAction(
                    name=action_name(tier, kind, step),
                    min_size=min(step.servers, max_size),
                    max_size=max_size,
                    desired=min(step.servers, max_size),
                    start_time=beijing(first),
                    end_time=beijing(first + timedelta(days=365)),
                    recurrence=f"{step.minute % 60} {step.minute // 60} * * {field}",
                )
            )
    return actions


def _refreshed(action: asg.ScheduledAction, now: datetime) -> asg.ScheduledAction:
    """The action with its first firing moved after now (an action put back by an undo must start later)."""
    minute, hour, _, _, field = action.recurrence.split()
    days = next((d for f, d in DAYS.values() if f == field), set(range(1, 8)))
    first = next_at(now + MIN_NOTICE, int(hour), int(minute), days)
    end = max(datetime.fromisoformat(action.end_time), first + timedelta(days=1)) if action.end_time else None
    return action.model_copy(update={"start_time": beijing(first), "end_time": beijing(end) if end else ""})


def _same(a: asg.ScheduledAction, b: asg.ScheduledAction) -> bool:
    return a.model_dump(include=SAME) == b.model_dump(include=SAME)


def shown(a: asg.ScheduledAction) -> str:
    return f"desired {a.desired} at cron '{a.recurrence}' Beijing time (bounds {a.min_size}-{a.max_size})"


def converge(
    run: TierRun[AutoScalingTierParameters], group: asg.Group, wanted: list[asg.ScheduledAction], now: datetime
) -> list[str]:
    """Create, modify or delete the tier's plan actions to match `wanted`; each change in the ledger first.
    Returns the differences (a dry run: what would change)."""
    region, group_id = run.region, group.group_id
    have = {a.name: a for a in policies.scheduled_actions(region, group_id) if a.name.startswith(prefix(run.tier))}
    differences: list[str] = []

    def change(what: str, undo: Callable[[], bool], fix: str, act: Callable[[], object]) -> None:
        differences.append(what)
        if run.params.dry_run:
            return
        run.ledger.add(what, undo, fix)
        act()

    def current(name: str) -> asg.ScheduledAction | None:
        return next((a for a in policies.scheduled_actions(region, group_id) if a.name == name), None)

    for action in wanted:
        old = have.get(action.name)
        if old is not None and _same(old, action):
            continue
        if old is None:
            change(
                f"create scheduled action {action.name}: {shown(action)}",
                lambda name=action.name: policies.delete_scheduled_action(region, group_id, name),
                f"delete scheduled action {action.name} of {group_id}",
                lambda action=action: policies.put_scheduled_action(region, group_id, action),
            )
            continue

        def put_back(old: asg.ScheduledAction = old, ours: asg.ScheduledAction = action) -> bool:
            now_there = current(ours.name)
            if now_there is None or not _same(now_there, ours):
                return False  # changed since by someone else: left as it is
            policies.put_scheduled_action(region, group_id, _refreshed(old, asg.cloud_now(region, group)))
            return True

        change(
            f"modify scheduled action {action.name}: {shown(old)} -> {shown(action)}",
            put_back,
            f"set scheduled action {action.name} of {group_id} back to {shown(old)}",
            lambda action=action: policies.put_scheduled_action(region, group_id, action),
        )
    for name in sorted(set(have) - {a.name for a in wanted}):
        old = have[name]

        def recreate(old: asg.ScheduledAction = old) -> bool:
            if current(old.name) is not None:
                return False
            policies.put_scheduled_action(region, group_id, _refreshed(old, asg.cloud_now(region, group)))
            return True

        change(
            f"delete scheduled action {name} (no longer in the plan): {shown(old)}",
            recreate,
            f"create scheduled action {name} of {group_id} again: {shown(old)}",
            lambda name=name: policies.delete_scheduled_action(region, group_id, name),
        )
    return differences
