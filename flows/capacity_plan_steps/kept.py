"""plan-capacity's changes to a tier's schedules, kept before they are made, for the undo of a run whose process is
gone (killed, crashed, cancelled): `cleanup-run` finds them by the run key alone.

Neither place can carry the run's mark: an Auto Scaling scheduled action takes no tag (its name marks it as the
plan's, not as a run's), and a Prefect schedule's parameters are its flow's. So, as the ledger keeps bindings and
desired capacities (flows/shared/ledger.py), each change is kept in a Prefect Variable before it is made:
`tcscale-plan-<run key>-<n>`, n = 0, 1, ... in the order made (one Variable each: a Variable holds at most 5,000
characters, a plan's changes more). A change holds the schedule before it (None: created) and what the run writes
(None: deleted). Its undo is the same in the run and in cleanup-run (`restore`): put `before` back only while the
schedule still holds what the run wrote; one that still holds `before` was never changed (the process died between
keeping and writing); anything else was changed since by someone else and is left (reported). Once undone here, a
change is marked so: a later cleanup-run of the key never undoes it again over a later plan's identical schedule;
once the run's plan is in place, its kept changes are deleted (plan_capacity.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prefect.variables import Variable
from pydantic import BaseModel

from flows.shared.ledger import Left

Place = Literal["autoscaling", "prefect"]


class ScheduleChange(BaseModel):
    """One create, modify (a pause too) or delete of a plan-capacity run, in the place's own shape (dumped)."""

    run_key: str
    n: int
    place: Place
    region: str
    tier: str
    group_id: str = ""  # autoscaling: the scaling group
    name: str  # the action's name, or the schedule's slug
    what: str
    fix: str
    before: dict[str, Any] | None = None
    written: dict[str, Any] | None = None
    undone: bool = False

    @property
    def variable(self) -> str:
        return variable_name(self.run_key, self.n)


def variable_name(run_key: str, n: int) -> str:
    return f"tcscale-plan-{run_key}-{n}"  # n has no dash: one name per key and n


def kept_changes(run_key: str) -> list[ScheduleChange]:
    """Every change the run key kept, in the order made."""
    found = []
    while (value := Variable.get(variable_name(run_key, len(found)), default=None)) is not None:
        found.append(ScheduleChange.model_validate(value))
    return found


class Keeper:
    """Keeps one run's changes, numbered on from what the key already kept (a re-run of the key goes on)."""

    def __init__(self, run_key: str) -> None:
        self.run_key = run_key
        self.next = len(kept_changes(run_key))

    def keep(self, **change: Any) -> ScheduleChange:
        kept = ScheduleChange(run_key=self.run_key, n=self.next, **change)
        Variable.set(kept.variable, kept.model_dump(mode="json"), overwrite=True)
        self.next += 1
        return kept


def mark_undone(change: ScheduleChange) -> None:
    change.undone = True
    Variable.set(change.variable, change.model_dump(mode="json"), overwrite=True)


def forget_changes(run_key: str) -> None:
    """Once the run is cleaned up, its kept changes are of no more use."""
    for change in kept_changes(run_key):
        Variable.unset(change.variable)


Status = Literal["to undo", "nothing to undo", "left"]
Dumped = dict[str, Any]


@dataclass(frozen=True)
class PlaceOps:
    """How one place reads, compares and writes a schedule, in its dumped shape."""

    now: Callable[[ScheduleChange], Dumped | None]  # the schedule as it is now (None: absent)
    same: Callable[[Dumped, Dumped], bool]  # equal in what it does (not its ids or first firing)
    put: Callable[[ScheduleChange, Dumped], object]  # create or modify it to this
    delete: Callable[[ScheduleChange], object]


def status(change: ScheduleChange, ops: PlaceOps) -> Status:
    """Whether the schedule still holds what the run wrote."""
    if change.undone:
        return "nothing to undo"
    now = ops.now(change)

    def equal(a: Dumped | None, b: Dumped | None) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and ops.same(a, b))

    if equal(now, change.before):
        return "nothing to undo"
    return "to undo" if equal(now, change.written) else "left"


def restore(change: ScheduleChange, ops: PlaceOps) -> bool | Left:
    """The undo of one change: `before` put back (deleted when the run created it) only while the schedule still holds
    what the run wrote; then marked undone (a schedule changed since is left, and reported)."""
    found = status(change, ops)
    if found == "to undo":
        if change.before is None:
            ops.delete(change)
        else:
            ops.put(change, change.before)
    if not change.undone:
        mark_undone(change)
    if change.n == 0 and all(c.undone for c in kept_changes(change.run_key)):
        forget_changes(change.run_key)  # the first change undone last (newest first): the run's undo is complete
    if found == "left":
        return Left(detail=f"{change.name} was changed since this run wrote it: left as it is")
    return found == "to undo"
