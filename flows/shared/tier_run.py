"""One scale operation on one tier: its run key and marks, its record, its lock, and its undo.

`tier_run` is what every tier flow does around the guide's steps: take the tier's lock (one operation
per tier, across every worker), run the steps, and if anything fails — an error, a cancellation, a
signal — undo what the run changed while still holding the lock, then write the report either way.

A signal in a deployment run is the exception: Prefect's runner (a cancel from the UI, a stopping worker) sends
SIGTERM and SIGKILL 30 s later (`prefect/runner/runner.py` `_kill_process(grace_seconds=30)`), shorter than a
real-cloud undo. A run whose every change `cleanup-run` finds by its marks (the scale-outs; verify-autoscaling and
set-capacity, whose desired capacity change is kept per run key; configure-autoscaling, whose changes of a group it
did not create are kept per run key too) hands its undo to a `cleanup-run/cleanup` run created at once, says so in its
report, releases the tier and exits; that run waits for the tier (and starts only once a write of this process whose
answer was lost can no longer land), undoes and reports. configure-autoscaling runs its tiers one after the other
under one key: its cleanup-run undoes the signalled tier's changes alone. (Prefect's `on_cancellation` hooks were the
other way: the runner runs them in its own process after the SIGKILL, with no flow run context or report, only for
cancels, and not at all when the runner itself stops.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture, wait
from prefect.states import Scheduled
from pydantic import BaseModel, Field

from flows.parameters import CleanupParameters, TierParameters
from flows.shared.ledger import Ledger
from flows.shared.report import RunRecord, StepRecord
from flows.shared.tier_lock import tier_lock
from tasks import remote
from tasks.lost_writes import landing_deadline
from tasks.models import Change

# A run is typed by its flow's parameters, so a step sees the fields of its own flow (covariant: a step that needs
# only the common fields takes any tier's run).
P_co = TypeVar("P_co", bound=TierParameters, covariant=True)
P = TypeVar("P", bound=TierParameters)
CLEANUP_DEPLOYMENT = "cleanup-run/cleanup"


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

    def __init__(
        self,
        flow: str,
        tier: str,
        params: P_co,
        steps: int,
        undo_by_marks: bool = False,
        edits_configs: bool = True,
        one_tier: bool = False,
    ) -> None:
        self.params = params
        self.undo_by_marks = undo_by_marks  # cleanup-run finds every change of this flow by the run's marks
        self.edits_configs = edits_configs  # may rewrite sdk.config: the cleanup-run it hands over to restores them
        self.one_tier = one_tier  # the run key's other tier may have finished: the cleanup-run undoes this tier's only
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

    def hand_undo_over(self, error: BaseException) -> bool:
        """A signalled deployment run whose changes cleanup-run finds by their marks: a `cleanup-run/cleanup` run of
        this run key, created at once (one per signalled run), takes the undo over. False: undo here (a `tcscale run`, a
        test, the demo, another flow, or no cleanup deployment to hand it to)."""
        from prefect.runtime import deployment

        if not (isinstance(error, TerminationSignal) and self.undo_by_marks and self.ledger.entries):
            return False
        if deployment.id is None:
            return False
        decided = {"run_key", "dry_run", "tier"}  # the run form's own fields
        shared = (set(CleanupParameters.model_fields) & set(type(self.params).model_fields)) - decided
        overrides = self.params.model_dump(mode="json", include=shared)  # cleanup's run form (flows/run_forms.py)
        form = {"run_key": self.key, "restore_configs": self.edits_configs, "overrides": overrides}
        if self.one_tier:
            form["tier"] = self.tier
        # a write whose answer was lost may still land: the undo waits it out (`outlast`) only in this process
        wait = landing_deadline()
        start = datetime.now(UTC) + timedelta(seconds=wait)
        logger = get_run_logger()
        try:
            with get_client(sync_client=True) as client:
                cleanup = client.read_deployment_by_name(CLEANUP_DEPLOYMENT)
                taker = client.create_flow_run_from_deployment(
                    cleanup.id, parameters={"params": form}, state=Scheduled(scheduled_time=start),
                    idempotency_key=f"undo:{self.key}:{this_flow_run_id()}",
                    tags=["tcscale", "cleanup", f"undo-of:{self.key}"],
                )  # fmt: skip
        except Exception as failure:  # no API, no cleanup deployment: the undo here is all there is
            logger.error("could not hand the undo to %s (%s): undoing here", CLEANUP_DEPLOYMENT, failure)
            return False
        what = (f"undo handed to cleanup-run {taker.name} ({taker.id}): signalled ({error}), this process has 30 s; "
                f"{f'it starts in {wait:.0f} s, once a lost write can no longer land; ' if wait else ''}"
                f"it waits for the tier, undoes the {len(self.ledger.entries)} change(s) "
                f"{f'of the {self.tier} tier ' if self.one_tier else ''}by the run's marks and "
                f"writes the report cleanup-run-{self.key}")  # fmt: skip
        logger.warning("%s", what)
        with self.step(what):
            pass
        error.add_note(what)
        return True


@contextlib.contextmanager
def tier_run(
    flow: str,
    tier: str,
    params: P,
    steps: int,
    lock_wait_seconds: float | None = None,
    undo_by_marks: bool = False,
    edits_configs: bool = True,
    one_tier: bool = False,
) -> Iterator[TierRun[P]]:
    """Lock (unless a dry run; waiting `lock_wait_seconds` for a busy tier, default the short wait), run, undo on
    any failure under the lock (a signalled deployment run of a flow whose changes all carry marks,
    `undo_by_marks`: by a cleanup-run, which looks for sdk.config backups only if the flow `edits_configs`, and undoes
    this tier's changes alone if `one_tier`: a flow running its tiers one after the other under one key), report
    whatever happens. One SSH connection per server serves every step of the run, its undo included
    (`remote.pooled`)."""
    run = TierRun(flow, tier, params, steps, undo_by_marks, edits_configs, one_tier)
    outcome = "failed"
    try:
        if params.dry_run:
            with remote.pooled():
                yield run
            outcome = "planned"
        else:
            with tier_lock(tier, lock_wait_seconds), remote.pooled():
                try:
                    yield run
                except BaseException as error:  # a cancellation or SIGTERM too: undo while the process lives
                    if not run.hand_undo_over(error):
                        run.undo(error)
                    raise
            outcome = "succeeded"
    finally:
        report = run.record.publish(outcome)
        if run.result is not None:
            run.result.report = report
