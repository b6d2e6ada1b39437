"""One scale operation on one tier: its run key and marks, its record, its lock, and its undo.

`tier_run` is what every tier flow does around the guide's steps: take the tier's lock (one operation
per tier, across every worker), run the steps, and if anything fails — an error, a cancellation, a
signal — undo what the run changed while still holding the lock, then write the report either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from prefect import get_run_logger
from prefect.context import get_run_context
from prefect.futures import PrefectFuture, wait
from pydantic import BaseModel, Field

from flows.parameters import TierParameters
from flows.shared.ledger import Ledger
from flows.shared.report import RunRecord, StepRecord
from flows.shared.tier_lock import tier_lock
from tasks.models import Change

# A run is typed by its flow's parameters, so a step sees the fields of its own flow (covariant: a step that needs
# only the common fields takes any tier's run).
P_co = TypeVar("P_co", bound=TierParameters, covariant=True)
P = TypeVar("P", bound=TierParameters)


class TierOutcome(BaseModel):
    tier: str
    run_key: str
    dry_run: bool
    image_id: str | None = None
    new_instance_ids: list[str] = Field(default_factory=list)
    load_balancer_id: str | None = None
    vip: str | None = None
    listener_id: str | None = None
    bound: list[str] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)
    plan: list[str] = Field(default_factory=list)
    report: str = ""


def run_key(params: TierParameters) -> str:
    return params.run_key or this_flow_run_id()


def this_flow_run_id() -> str:
    return str(get_run_context().flow_run.id)  # type: ignore[union-attr]


def ownership_tags(key: str, tier: str) -> dict[str, str]:
    """Every resource a run makes carries these: undo, re-runs and `cleanup-run` find them by tag.

    `tcscale:tier` also makes the new servers members of the tier, so the next scale-out sees them.
    """
    return {"tcscale:run": key, "tcscale:tier": tier}


def client_token(key: str, tier: str, what: str) -> str:
    return f"tcscale-{key}-{tier}-{what}"[:64]


def settle_all(futures: list[PrefectFuture[Any]]) -> None:
    """Wait for every parallel step, also when interrupted (a signal, a cancellation): nothing may be undone
    while one of them still runs. Each step's SSH and HTTP calls have their own timeouts, so this ends."""
    try:
        wait(futures)
    except BaseException:
        wait(futures)
        raise


class TierRun(Generic[P_co]):
    """The state of one tier's run that its steps share, typed by the flow's parameters."""

    def __init__(self, flow: str, tier: str, params: P_co, steps: int) -> None:
        self.params = params
        self.tier = tier
        self.region = params.region
        self.key = run_key(params)
        self.tags = ownership_tags(self.key, tier)
        self.record = RunRecord(flow, tier, params.region, self.key, params.dry_run, steps)
        self.ledger = Ledger()
        self.result: TierOutcome | None = None

    def step(self, name: str) -> contextlib.AbstractContextManager[StepRecord]:
        return self.record.step(name)

    def client_token(self, what: str) -> str:
        return client_token(self.key, self.tier, what)

    def finish(self, outcome: TierOutcome) -> TierOutcome:
        self.result = outcome
        return outcome

    def undo(self, error: BaseException) -> None:
        """Undo every change of the run, newest first; record and log what could not be undone, with its fix."""
        logger = get_run_logger()
        if not self.ledger.entries:
            return
        logger.error("%s failed (%s): undoing the %d change(s) of this run", self.record.flow, error,
                     len(self.ledger.entries))  # fmt: skip
        with self.step(f"undo the {len(self.ledger.entries)} change(s) of this run, newest first") as step:
            self.record.undone = self.ledger.undo_all(logger)
            failed = [u for u in self.record.undone if u.outcome == "FAILED"]
            if failed:
                step.outcome = "incomplete"
                error.add_note(
                    "undo incomplete, fix by hand:\n" + "\n".join(f"- {u.what}: {u.detail} -> {u.fix}" for u in failed)
                )


@contextlib.contextmanager
def tier_run(
    flow: str, tier: str, params: P, steps: int, lock_wait_seconds: float | None = None
) -> Iterator[TierRun[P]]:
    """Lock (unless a dry run; waiting `lock_wait_seconds` for a busy tier, default the short wait), run, undo on
    any failure under the lock, report whatever happens."""
    run = TierRun(flow, tier, params, steps)
    outcome = "failed"
    try:
        if params.dry_run:
            yield run
            outcome = "planned"
        else:
            with tier_lock(tier, lock_wait_seconds):
                try:
                    yield run
                except BaseException as error:  # a cancellation or SIGTERM too: undo while the process lives
                    run.undo(error)
                    raise
            outcome = "succeeded"
    finally:
        report = run.record.publish(outcome)
        if run.result is not None:
            run.result.report = report
