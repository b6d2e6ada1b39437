"""A scheduled capacity change waits for its busy tier until its lateness limit (issue 14, defect 9).

A real scale-out holds a tier for many minutes: the lunch peak's `set-capacity`, made by its schedule, must not give
up after the short wait a person gets ("busy" at once). Its wait is computed from its expected start and its
`late_after_minutes`, so these tests set an expected start just short of the limit: a deadline seconds away.
The tier's lock is held by another thread, exactly as a running flow holds it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from flows.autoscaling_steps import lateness
from flows.parameters import CapacityParameters
from flows.set_capacity import set_capacity
from flows.shared import tier_lock as lock
from tests.flows.autoscaling_support import autoscaling_params

LATE_AFTER = 20  # minutes, as the lunch-peak deployments set


class Holder:
    """Another run holding the business tier until `release()`."""

    def __init__(self) -> None:
        self.taken, self.released = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._hold, name="holds-business-tier", daemon=True)

    def _hold(self) -> None:
        try:
            with lock.tier_lock("business"):
                self.taken.set()
                self.released.wait(60)
        except BaseException as error:  # surfaced by the fixture, not lost in the thread
            self.errors.append(error)
            self.taken.set()

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def business_tier_held(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Holder]:
    monkeypatch.setattr(lock, "LOCK_WAIT_SECONDS", 1.0)  # a person's wait before "busy": short
    holder = Holder()
    holder.thread.start()
    assert holder.taken.wait(30) and not holder.errors, holder.errors
    try:
        yield holder
    finally:
        holder.release()
        holder.thread.join(30)


def scheduled(monkeypatch: pytest.MonkeyPatch, deadline_in: float, auto: bool = True) -> None:
    """The run as Prefect's scheduler made it (or, `auto=False`, as the UI or chat did), its expected start such
    that its lateness limit is `deadline_in` seconds away."""
    start = datetime.now(UTC) - timedelta(minutes=LATE_AFTER) + timedelta(seconds=deadline_in)
    monkeypatch.setattr(lateness, "expected_start", lambda: start)
    monkeypatch.setattr(lateness, "auto_scheduled", lambda: auto)


def capacity(guide) -> CapacityParameters:
    business = autoscaling_params(guide).business
    return CapacityParameters(tier="business", capacity="+2", business=business, late_after_minutes=LATE_AFTER)


def test_a_scheduled_change_waits_for_its_busy_tier(guide, cloud_env, business_tier_held, monkeypatch):
    """The other run ends 3 s later (past a person's 1 s wait, before the 15 s limit): the scheduled change gets the
    tier and goes on (here to "no scaling group": it held the lock, it was not refused as busy)."""
    scheduled(monkeypatch, deadline_in=15)
    threading.Timer(3.0, business_tier_held.release).start()
    started = time.monotonic()
    with pytest.raises(LookupError, match="run configure-autoscaling"):
        set_capacity(capacity(guide))
    assert time.monotonic() - started >= 3.0


def test_a_scheduled_change_gives_up_at_its_lateness_limit(guide, cloud_env, business_tier_held, monkeypatch):
    scheduled(monkeypatch, deadline_in=4)
    started = time.monotonic()
    with pytest.raises(lock.TierBusy, match="business tier"):
        set_capacity(capacity(guide))
    waited = time.monotonic() - started
    assert 3.0 <= waited < 15.0, f"waited {waited:.1f} s for a limit 4 s away"


def test_a_change_made_by_hand_or_chat_is_busy_at_once(guide, cloud_env, business_tier_held, monkeypatch):
    scheduled(monkeypatch, deadline_in=15, auto=False)
    started = time.monotonic()
    with pytest.raises(lock.TierBusy, match="business tier"):
        set_capacity(capacity(guide))
    assert time.monotonic() - started < 8.0, "a person's change waited as long as a schedule's"
