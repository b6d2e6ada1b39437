"""The plan as a scaling group's scheduled actions: one recurring action per step and day type, named
`tcscale-<tier>-plan-<days>-<HHMM>` (the name is the mark: scheduled actions take no tag).

Each action sets the desired capacity and the minimum to the step's servers, the maximum to the group's: the plan
is a floor the CPU alarms cannot take away, and they still add servers above it for load it did not foresee (the
guide's lunch-peak actions do the same with min + extra). The day's first step, at 00:00, puts the floor back to the
tier's base.
Every change is kept for cleanup-run (kept.py) and written to the run's undo ledger before it is made: a creation is
undone by deleting it, a modification by putting the earlier action back, a deletion by creating the earlier action
again, each only while the action still holds what this run wrote.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flows.autoscaling_steps.plan import MIN_NOTICE, beijing, next_at
from flows.capacity_plan_steps.kept import Dumped, Keeper, PlaceOps, ScheduleChange, restore
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


def _now(change: ScheduleChange) -> Dumped | None:
    if asg.describe_group(change.region, change.group_id) is None:
        return None  # the group is gone, its actions with it
    found = [a for a in policies.scheduled_actions(change.region, change.group_id) if a.name == change.name]
    return found[0].model_dump(mode="json") if found else None


def _put(change: ScheduleChange, to: Dumped) -> None:
    group = asg.describe_group(change.region, change.group_id)
    if group is None:
        raise LookupError(f"the scaling group {change.group_id} is gone: {change.name} cannot be put back")
    action = _refreshed(asg.ScheduledAction.model_validate(to), asg.cloud_now(change.region, group))
    policies.put_scheduled_action(change.region, change.group_id, action)  # an undo's starts later


PLACE = PlaceOps(
    now=_now,
    same=lambda a, b: _same(asg.ScheduledAction.model_validate(a), asg.ScheduledAction.model_validate(b)),
    put=_put,
    delete=lambda change: policies.delete_scheduled_action(change.region, change.group_id, change.name),
)


def converge(
    run: TierRun[AutoScalingTierParameters], group: asg.Group, wanted: list[asg.ScheduledAction], now: datetime
) -> list[str]:
    """Create, modify or delete the tier's plan actions to match `wanted`; each change kept for cleanup-run
    (kept.py) and in the ledger first. Returns the differences (a dry run: what would change)."""
    region, group_id = run.region, group.group_id
    have = {a.name: a for a in policies.scheduled_actions(region, group_id) if a.name.startswith(prefix(run.tier))}
    differences: list[str] = []
    keeper: list[Keeper] = []  # made at the first change: a run that changes nothing reads no Variable

    def change(
        what: str, fix: str, name: str, old: asg.ScheduledAction | None, new: asg.ScheduledAction | None
    ) -> None:
        differences.append(what)
        if run.params.dry_run:
            return
        keeper[:] = keeper or [Keeper(run.key)]
        kept = keeper[0].keep(
            place="autoscaling", region=region, tier=run.tier, group_id=group_id, name=name, what=what, fix=fix,
            before=old and old.model_dump(mode="json"), written=new and new.model_dump(mode="json"),
        )  # fmt: skip
        run.ledger.add(what, lambda: restore(kept, PLACE), fix)
        if new is None:
            policies.delete_scheduled_action(region, group_id, name)
        else:
            policies.put_scheduled_action(region, group_id, new)

    for action in wanted:
        old = have.get(action.name)
        if old is not None and _same(old, action):
            continue
        if old is None:
            change(f"create scheduled action {action.name}: {shown(action)}",
                   f"delete scheduled action {action.name} of {group_id}", action.name, None, action)  # fmt: skip
            continue
        back = f"set scheduled action {action.name} of {group_id} back to {shown(old)}"
        change(f"modify scheduled action {action.name}: {shown(old)} -> {shown(action)}", back, action.name, old,
               action)  # fmt: skip
    for name in sorted(set(have) - {a.name for a in wanted}):
        old = have[name]
        change(f"delete scheduled action {name} (no longer in the plan): {shown(old)}",
               f"create scheduled action {name} of {group_id} again: {shown(old)}", name, old, None)  # fmt: skip
    return differences
