"""A cleanup-run started right after a run died waits for the tiers until the dead run's lease has expired
(issue 14, defect 8): `plan cleanup` -> `apply`, or the automation's cleanup-run, failed TierBusy after the short
wait a person gets, while the killed run's lock was still held (it is freed within `LEASE_SECONDS`)."""

from __future__ import annotations

import threading
import time

import pytest

from flows import cleanup_run
from flows.shared import tier_lock as lock


def test_cleanup_waits_for_a_tier_held_longer_than_the_short_wait(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lock, "LOCK_WAIT_SECONDS", 0.5)  # a person's wait before "busy"
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:  # the dead run's lock, until its lease is freed
        with lock.tier_lock("business"):
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(30)
    timer = threading.Timer(3.0, release.set)  # well past the short wait
    timer.start()
    started = time.monotonic()
    try:
        with cleanup_run.both_tier_locks():
            waited = time.monotonic() - started
    finally:
        release.set()
        holder.join(30)
    assert waited >= 2.5
    assert cleanup_run.LOCK_WAIT_SECONDS > lock.LEASE_SECONDS  # outlives a dead holder's lease
