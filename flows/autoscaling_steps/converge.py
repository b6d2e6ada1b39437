"""How configure-autoscaling applies a difference: each one recorded (the report's list), applied unless a dry run;
and the one loop that converges a group's named items (scheduled actions, alarm policies) to the wanted ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from flows.parameters import AutoScalingTierParameters
from flows.shared.ledger import GroupChange, forget_group_changes, remember_group_change, undo_group_change
from flows.shared.tier_run import TierRun
from tasks import autoscaling as asg

Named = TypeVar("Named", asg.ScheduledAction, asg.AlarmPolicy)


class Converge:
    """Each difference is recorded; applied unless a dry run."""

    def __init__(self, run: TierRun[AutoScalingTierParameters]) -> None:
        self.run = run
        self.differences: list[str] = []

    def change(self, what: str, apply: Any = None) -> Any:
        self.differences.append(what)
        if self.run.params.dry_run or apply is None:
            return None
        return apply()


def record_group_change(run: TierRun[AutoScalingTierParameters], change: GroupChange) -> None:
    """A change of a scaling group, kept before it is made: per run key in a Prefect Variable (what `cleanup-run` finds
    once this process is gone: a group the run did not create carries no mark of it) and in the ledger, whose undo
    forgets it once undone."""
    remember_group_change(run.key, change)
    timeouts = run.params.timeouts

    def undo() -> bool:
        undone = undo_group_change(change, timeouts.undo, timeouts.poll)
        forget_group_changes(run.key, only=change)
        return undone

    run.ledger.add(change.described(), undo, change.fix())


@dataclass(frozen=True)
class NamedItems(Generic[Named]):
    """One kind of a group's named items that configure-autoscaling owns by name (scheduled actions, alarm
    policies): how to list, compare, show, create-or-modify and delete them."""

    kind: Literal["scheduled action", "alarm policy"]
    ours: set[str]  # the names this tier's runs use: only these are ever deleted
    gone_because: str
    listed: Callable[[str, str], list[Named]]
    same: Callable[[Named, Named], bool]
    shown: Callable[[Named], str]
    put: Callable[[str, str, Named], Any]
    delete: Callable[[str, str, str], Any]


def converge_named(
    run: TierRun[AutoScalingTierParameters],
    c: Converge,
    group: asg.Group,
    items: NamedItems[Named],
    wanted: list[Named],
) -> None:
    """Create or modify each wanted item whose cloud copy differs; delete ours that are no longer wanted. A creation
    is written to the undo ledger before it is made; a modification is not undone (re-running restores it)."""
    region, group_id = run.region, group.group_id
    have = {item.name: item for item in items.listed(region, group_id)}
    for item in wanted:
        old = have.get(item.name)
        if old is not None and items.same(old, item):
            continue

        def put(item: Named = item, created: bool = old is None) -> None:
            if created:
                change = GroupChange(region=region, tier=run.tier, group_id=group_id, kind=items.kind, name=item.name)
                record_group_change(run, change)
            items.put(region, group_id, item)

        c.change(f"{'create' if old is None else 'modify'} {items.kind} {item.name}: {items.shown(item)}", put)
    for name in sorted((items.ours - {item.name for item in wanted}) & set(have)):
        c.change(
            f"delete {items.kind} {name} ({items.gone_because})",
            lambda name=name: items.delete(region, group_id, name),
        )
