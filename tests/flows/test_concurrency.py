"""One scale operation per tier at a time: a second one gets `TierBusy`, says why, and changes nothing.

The lock is Prefect's global concurrency limit `tcscale-scale-<tier>` on the test's Prefect server,
held here from another thread exactly as a running flow holds it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from flows.scale_out import scale_out_business_tier, scale_out_session_tier
from flows.shared import tier_lock as lock
from tests.flows.support import business_configs, business_params, inventory, session_params


@pytest.fixture
def session_tier_held(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The session tier's lock, taken by another thread until the test ends."""
    monkeypatch.setattr(lock, "LOCK_WAIT_SECONDS", 1.0)  # how long a second operation waits before "busy"
    taken, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with lock.tier_lock("session"):
                taken.set()
                release.wait(60)
        except BaseException as error:  # surfaced below, not lost in the thread
            errors.append(error)
            taken.set()

    holder = threading.Thread(target=hold, name="holds-session-tier", daemon=True)
    holder.start()
    assert taken.wait(30) and not errors, errors
    try:
        yield
    finally:
        release.set()
        holder.join(30)


def test_second_operation_on_a_tier_is_busy(guide, cloud_env, session_tier_held):
    before, configs = inventory(cloud_env), business_configs(cloud_env)

    with pytest.raises(lock.TierBusy) as busy:
        scale_out_session_tier(session_params(guide))

    message = str(busy.value)
    assert "another scale operation on the session tier is running" in message
    assert "tcscale-scale-session" in message and "cancel it in the Prefect UI" in message
    assert inventory(cloud_env) == before and business_configs(cloud_env) == configs

    # The lock is per tier: the business tier is free meanwhile.
    outcome = scale_out_business_tier(business_params(guide, count=1))
    assert len(outcome.new_instance_ids) == 1


def test_tier_lock_is_released_after_use(prefect_harness, monkeypatch):
    monkeypatch.setattr(lock, "LOCK_WAIT_SECONDS", 1.0)
    with lock.tier_lock("session"), pytest.raises(lock.TierBusy), lock.tier_lock("session"):
        pass  # held: busy for anyone else
    with lock.tier_lock("session"):  # released: free again
        pass


def test_cleanup_takes_the_tier_lock(guide, cloud_env, session_tier_held, monkeypatch):
    from flows import cleanup_run as cleanup
    from flows.cleanup_run import cleanup_run

    # cleanup-run waits for a busy tier until a dead holder's lease has expired (test_cleanup_lock_wait.py); here
    # the holder is alive: with a short wait it gives up.
    monkeypatch.setattr(cleanup, "LOCK_WAIT_SECONDS", 1.0)
    from flows.parameters import CleanupParameters
    from tests.flows.support import BUSINESS_TAG, ssh_settings

    params = CleanupParameters(run_key="any-run", region=guide["region"], business_servers=BUSINESS_TAG,
                               ssh=ssh_settings(guide), timeout=20)  # fmt: skip
    with pytest.raises(lock.TierBusy, match="session tier"):
        cleanup_run(params)
