"""Undoing a run: each change is written down before it is made, and undone in reverse when the run fails.

Prefect 3.8.8's transaction rollback cannot be trusted with parallel steps (a failing mapped task rolls the
transaction back from its own thread while its siblings still write, and their hooks never run), so a run
keeps its own ledger: the flow adds an entry, then acts; on failure, once every parallel step has finished,
it undoes every entry, newest first, each whatever happened to the others. Every undo is idempotent and
finds its resource by the run's marks (tags, names, descriptions, backups), so it also undoes a change
whose answer was lost, and `cleanup-run` undoes a killed run with the same functions.

Bindings to a load balancer the run did not create carry no mark a later process could find, so they are
also kept in a Prefect Variable (`tcscale-bindings-<run key>`) for `cleanup-run`; so is a change of a scaling
group's desired capacity (`tcscale-capacity-<run key>`: the original and the value the run writes, kept before it
is written), which a re-run of the key and `cleanup-run` put back, and which makes `set-capacity` idempotent; and so
are configure-autoscaling's changes of a scaling group it did not create (`tcscale-groups-<run key>`: the fields it
modifies, the servers it attaches, the scheduled actions and alarm policies it creates), each with its tier, so a
cleanup-run of one tier undoes that tier's alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prefect.variables import Variable
from pydantic import BaseModel, Field

from tasks import autoscaling as asg
from tasks import autoscaling_policies as policies
from tasks import autoscaling_undo, clb

log = logging.getLogger("tcscale.undo")

Outcome = Literal["undone", "nothing to undo", "left", "FAILED"]  # left: changed since by someone else, kept


class Undone(BaseModel):
    """One undo, as the report shows it."""

    what: str
    outcome: Outcome
    detail: str = ""
    fix: str = ""


class Left(BaseModel):
    """What an undo answers when the value it would put back was changed since by someone else: that change stays,
    and the report says so."""

    detail: str


@dataclass
class UndoEntry:
    what: str
    undo: Callable[[], Any]  # idempotent; a falsy answer: nothing left to undo; a `Left`: changed since, kept
    fix: str  # what a person does by hand when the undo fails


class Ledger:
    """What a run changed, in order."""

    def __init__(self) -> None:
        self.entries: list[UndoEntry] = []

    def add(self, what: str, undo: Callable[[], Any], fix: str) -> None:
        self.entries.append(UndoEntry(what, undo, fix))

    def undo_all(self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log) -> list[Undone]:
        """Undo every entry, newest first; a failed undo is logged with its fix and the rest still run."""
        results = []
        for entry in reversed(self.entries):
            try:
                changed = entry.undo()
            except Exception as error:
                logger.error("could not undo: %s: %s. Fix by hand: %s", entry.what, error, entry.fix)
                results.append(Undone(what=entry.what, outcome="FAILED", detail=str(error)[:500], fix=entry.fix))
                continue
            if isinstance(changed, Left):
                logger.warning("undo: %s: left as it is: %s", entry.what, changed.detail)
                results.append(Undone(what=entry.what, outcome="left", detail=changed.detail, fix=entry.fix))
                continue
            outcome: Outcome = "undone" if changed else "nothing to undo"
            logger.info("undo: %s: %s", entry.what, outcome)
            results.append(Undone(what=entry.what, outcome=outcome))
        return results


# --- bindings to load balancers the run did not create ------------------------------------------------------


class Binding(BaseModel):
    """The (instance, port) pairs a run bound to a listener it did not create: its undo unbinds exactly these."""

    region: str
    load_balancer_id: str
    listener_id: str
    targets: list[clb.Target]

    def described(self) -> str:
        return ", ".join(map(str, self.targets))


def _bindings_variable(run_key: str) -> str:
    return f"tcscale-bindings-{run_key}"


def _kept(name: str) -> list[Any]:
    return list(Variable.get(name, default=None) or [])


def _keep(name: str, items: list[BaseModel]) -> None:
    if items:
        Variable.set(name, [item.model_dump() for item in items], overwrite=True)
    else:
        Variable.unset(name)


def remember_binding(run_key: str, binding: Binding) -> None:
    """Keep, before binding, which pairs a run binds to a listener it did not create (for `cleanup-run`)."""
    _keep(_bindings_variable(run_key), [*remembered_bindings(run_key), binding])


def remembered_bindings(run_key: str) -> list[Binding]:
    return [Binding.model_validate(b) for b in _kept(_bindings_variable(run_key))]


def forget_bindings(run_key: str) -> None:
    """Once they are undone (a cleaned-up run), its remembered bindings are of no more use."""
    Variable.unset(_bindings_variable(run_key))


# --- desired capacity of a scaling group ---------------------------------------------------------------------


class CapacityChange(BaseModel):
    """A run's ModifyDesiredCapacity of a group, kept before it is made: the group's desired capacity before the run
    (`previous`) and the value the run writes (`target`), with what `set-capacity` was asked (`asked`, "+1")."""

    region: str
    group_id: str
    previous: int
    target: int
    asked: str = ""
    previous_min: int | None = None  # set-capacity's floor writes the group's MinSize with it (else None)
    target_min: int | None = None
    tier: str = ""  # the tier whose run made it: a cleanup-run of one tier puts back that tier's only

    def described(self) -> str:
        floor = f", minimum {self.previous_min} -> {self.target_min}" if self.target_min is not None else ""
        return f"desired capacity of {self.group_id} {self.previous} -> {self.target}{floor}"


def _capacity_variable(run_key: str) -> str:
    return f"tcscale-capacity-{run_key}"


def remembered_capacities(run_key: str) -> list[CapacityChange]:
    return [CapacityChange.model_validate(c) for c in _kept(_capacity_variable(run_key))]


def remembered_capacity(run_key: str, group_id: str) -> CapacityChange | None:
    return next((c for c in remembered_capacities(run_key) if c.group_id == group_id), None)


def remember_capacity(run_key: str, change: CapacityChange) -> None:
    """Keep, before the change, what a run sets a group's desired capacity to (one change per group and run key)."""
    others = [c for c in remembered_capacities(run_key) if c.group_id != change.group_id]
    _keep(_capacity_variable(run_key), [*others, change])


def forget_capacity(run_key: str, group_id: str | None = None) -> None:
    """Once put back (or undone), a remembered change is of no more use: none of its group's (None: of every group)
    is restored again over a value someone else sets later."""
    kept = [] if group_id is None else [c for c in remembered_capacities(run_key) if c.group_id != group_id]
    _keep(_capacity_variable(run_key), kept)


def restore_capacity(change: CapacityChange, timeout: float, poll: float = 2.0) -> bool | Left:
    """The group's desired capacity back to `previous`, only while it is still the `target` the run wrote; a value
    set since by anyone else stays and is reported (a `Left`). False: nothing to put back (also: no group)."""
    now = asg.describe_group(change.region, change.group_id)
    if now is not None and now.desired not in (change.target, change.previous):
        return Left(detail=f"desired capacity of {change.group_id} is {now.desired}, set since this run wrote "
                    f"{change.target}: not put back to {change.previous}")  # fmt: skip
    floor = (change.target_min, change.previous_min) if change.target_min is not None else None
    return autoscaling_undo.restore_desired(
        change.region, change.group_id, change.target, change.previous, timeout, poll, floor
    )


def unbind(binding: Binding, timeout: float) -> list[clb.Target]:
    """Deregister the binding's pairs that are still bound (none when the load balancer is gone); the servers'
    other ports on the listener stay."""
    if clb.describe_load_balancer(binding.region, binding.load_balancer_id) is None:
        return []
    return clb.deregister_targets(
        binding.region, binding.load_balancer_id, binding.listener_id, binding.targets, timeout
    )


# --- configure-autoscaling's changes of a scaling group it did not create ---------------------------------------


class GroupChange(BaseModel):
    """One change of a scaling group the run did not create, kept before it is made: the fields it writes (`written`,
    over `previous`), the servers it attaches (and the pairs of the group's listener they had before: detaching
    deregisters them), or the scheduled action or alarm policy it creates (`name`)."""

    region: str
    tier: str
    group_id: str
    kind: Literal["fields", "attached", "scheduled action", "alarm policy"]
    written: dict[str, Any] = Field(default_factory=dict)
    previous: dict[str, Any] = Field(default_factory=dict)
    instance_ids: list[str] = Field(default_factory=list)
    forward: asg.ForwardLoadBalancer | None = None
    was_bound: list[clb.Target] = Field(default_factory=list)
    name: str = ""

    def described(self) -> str:
        if self.kind == "fields":
            return f"{', '.join(self.written)} of {self.group_id}"
        if self.kind == "attached":
            return f"{', '.join(self.instance_ids)} attached to {self.group_id}"
        return f"{self.kind} {self.name} of {self.group_id}"

    def fix(self) -> str:
        if self.kind == "fields":
            return f"set {self.group_id} back to {self.previous} (each field only if it still holds {self.written})"
        if self.kind == "attached":
            fwd = self.forward
            where = f"{fwd.load_balancer_id}/{fwd.listener_id}" if fwd else "their CLB listener"
            pairs = ", ".join(map(str, self.was_bound)) or "none"
            return (f"unprotect and remove {', '.join(self.instance_ids)} from {self.group_id} (RemoveInstances only "
                    f"detaches), then bind {pairs} to {where} again")  # fmt: skip
        return f"delete {self.kind} {self.name} of {self.group_id}"


def _group_changes_variable(run_key: str) -> str:
    return f"tcscale-groups-{run_key}"


def remembered_group_changes(run_key: str, tier: str | None = None) -> list[GroupChange]:
    """The run's kept changes (of `tier` only, unless None), oldest first."""
    kept = [GroupChange.model_validate(c) for c in _kept(_group_changes_variable(run_key))]
    return [c for c in kept if tier is None or c.tier == tier]


def remember_group_change(run_key: str, change: GroupChange) -> None:
    """Keep, before the change, a change of a scaling group the run did not create (for `cleanup-run`)."""
    _keep(_group_changes_variable(run_key), [*remembered_group_changes(run_key), change])


def forget_group_changes(run_key: str, tier: str | None = None, only: GroupChange | None = None) -> None:
    """Once undone, or once the tier's run finished: `only` that change, else the tier's (None: every tier's)."""
    kept = [
        c
        for c in remembered_group_changes(run_key)
        if not (c == only if only is not None else tier is None or c.tier == tier)
    ]
    _keep(_group_changes_variable(run_key), kept)


def undo_group_change(change: GroupChange, timeout: float, poll: float = 2.0) -> bool:
    """Undo one kept change, idempotently: fields back only while they hold what the run wrote, its servers detached
    (and bound to the listener again as before), its scheduled action or alarm policy deleted. False: nothing left."""
    region, group_id = change.region, change.group_id
    if change.kind == "fields":
        return autoscaling_undo.restore_group(region, group_id, change.written, change.previous)
    if change.kind == "attached":
        return autoscaling_undo.detach(
            region, group_id, change.instance_ids, change.forward, change.was_bound, timeout, poll
        )
    if change.kind == "scheduled action":
        return policies.delete_scheduled_action(region, group_id, change.name)
    return policies.delete_alarm_policy(region, group_id, change.name)
