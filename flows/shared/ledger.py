"""Undoing a run: each change is written down before it is made, and undone in reverse when the run fails.

Prefect 3.8.8's transaction rollback cannot be trusted with parallel steps (a failing mapped task rolls the
transaction back from its own thread while its siblings still write, and their hooks never run), so a run
keeps its own ledger: the flow adds an entry, then acts; on failure, once every parallel step has finished,
it undoes every entry, newest first, each whatever happened to the others. Every undo is idempotent and
finds its resource by the run's marks (tags, names, descriptions, backups), so it also undoes a change
whose answer was lost, and `cleanup-run` undoes a killed run with the same functions.

Bindings to a load balancer the run did not create carry no mark a later process could find, so they are
also kept in a Prefect Variable (`tcscale-bindings-<run key>`) for `cleanup-run`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from prefect.variables import Variable
from pydantic import BaseModel

from tasks import clb

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


def remember_binding(run_key: str, binding: Binding) -> None:
    """Keep, before binding, which pairs a run binds to a listener it did not create (for `cleanup-run`)."""
    name = _bindings_variable(run_key)
    known = [Binding.model_validate(b) for b in (Variable.get(name, default=None) or [])]
    Variable.set(name, [b.model_dump() for b in [*known, binding]], overwrite=True)


def remembered_bindings(run_key: str) -> list[Binding]:
    return [Binding.model_validate(b) for b in (Variable.get(_bindings_variable(run_key), default=None) or [])]


def forget_bindings(run_key: str) -> None:
    """Once they are undone (a cleaned-up run), its remembered bindings are of no more use."""
    Variable.unset(_bindings_variable(run_key))


def unbind(binding: Binding, timeout: float) -> list[clb.Target]:
    """Deregister the binding's pairs that are still bound (none when the load balancer is gone); the servers'
    other ports on the listener stay."""
    if clb.describe_load_balancer(binding.region, binding.load_balancer_id) is None:
        return []
    return clb.deregister_targets(
        binding.region, binding.load_balancer_id, binding.listener_id, binding.targets, timeout
    )
