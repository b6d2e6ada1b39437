"""cleanup-run's part for plan-capacity: the schedule changes a run key kept (kept.py), each with its place's undo."""

from __future__ import annotations

from flows.capacity_plan_steps import apply, prefect_schedules
from flows.capacity_plan_steps.kept import ScheduleChange, Status, kept_changes, restore, status
from flows.shared.ledger import Left

PLACES = {"autoscaling": apply.PLACE, "prefect": prefect_schedules.PLACE}


def pending(run_key: str) -> list[tuple[ScheduleChange, Status]]:
    """The run key's changes not undone yet, each with whether the schedule still holds what the run wrote."""
    return [(c, status(c, PLACES[c.place])) for c in kept_changes(run_key) if not c.undone]


def undo(change: ScheduleChange) -> bool | Left:
    return restore(change, PLACES[change.place])
