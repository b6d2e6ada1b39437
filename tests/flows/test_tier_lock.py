"""The tier lock survives what a production Prefect server goes through: restarts, an API outage, a limit switched
off in the UI, a holder killed with its machine (issue 14, defect 1).

The restarts run a real `prefect server start` of their own (`PrefectServer`), stopped and started on the same
database, as an operator's server is upgraded or its machine reboots.
"""

from __future__ import annotations

import contextvars
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.settings import PREFECT_API_URL, temporary_settings

from devstack.prefect_server import FILESYSTEM_LEASES, MEMORY_LEASES, PrefectServer
from flows.shared import tier_lock as lock
from tasks.waiters import wait_until

LIMIT = lock.limit_name("session")


def slots(name: str = LIMIT) -> tuple[int, bool]:
    """(active slots, active) of a tier's limit."""
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    return limit.active_slots, limit.active


def busy(tier: str = "session") -> bool:
    """Whether another operation would find the tier taken (asked from another thread, as another run would)."""
    found: list[bool] = []

    def ask() -> None:
        try:
            with lock.tier_lock(tier, wait_seconds=1):
                found.append(False)
        except lock.TierBusy:
            found.append(True)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(ask,))  # this test's Prefect server
    thread.start()
    thread.join(60)
    return found == [True]


@pytest.fixture
def own_server(tmp_path: Path, request: pytest.FixtureRequest, prefect_database: Path) -> Iterator[PrefectServer]:
    """A Prefect server of this test's own, with the lease storage the test names (`@pytest.mark.parametrize`
    on `lease_storage`, default memory: Prefect's own default, what an operator's server runs unless told)."""
    storage = getattr(request, "param", MEMORY_LEASES)
    server = PrefectServer(tmp_path / "prefect", lease_storage=storage, database_template=prefect_database).start()
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        server.stop()


def test_a_limit_switched_off_in_the_ui_still_locks_the_tier(prefect_harness: None, caplog) -> None:
    with lock.tier_lock("session"):
        pass  # the limit exists
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(LIMIT, GlobalConcurrencyLimitUpdate(active=False))

    with caplog.at_level(logging.WARNING, "tcscale.tier_lock"), lock.tier_lock("session"):
        assert busy()
        assert slots() == (1, True)
    assert "switched off" in caplog.text and LIMIT in caplog.text
    assert slots() == (0, True)


@pytest.mark.stack
@pytest.mark.parametrize(
    "own_server",
    [MEMORY_LEASES, pytest.param(FILESYSTEM_LEASES, marks=pytest.mark.slow)],  # memory: Prefect's default
    indirect=True,
)
def test_a_tier_stays_locked_through_an_api_outage_and_a_server_restart_and_is_freed_by_its_holder(
    own_server: PrefectServer, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.5)
    monkeypatch.setattr(lock, "RETRY_SECONDS", 0.5)
    with caplog.at_level(logging.WARNING, "tcscale.tier_lock"), lock.tier_lock("session"):
        own_server.stop()  # the API is down for longer than a renewal
        wait_until(
            lambda: "renewing the tier lease failed" in caplog.text,
            done=bool,
            failed=lambda _: None,
            what="a renewal to fail while the API is down",
            timeout=30,
        )
        own_server.start()  # same database; on memory storage the server forgot the lease, not the slot
        assert busy()  # still one operation per tier: the run was not cancelled, and nobody else got in
    assert "expired" not in caplog.text
    assert slots() == (0, True)  # its holder left: free again (before: taken for ever on memory storage)
    assert not busy()


HOLD_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from flows.shared import tier_lock as lock
    lock.LEASE_SECONDS = 60  # the shortest lease the server takes
    with lock.tier_lock("session"):
        print("held", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # a power cut: nothing runs after this
    """
)


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.parametrize("own_server", [FILESYSTEM_LEASES], indirect=True)
def test_a_killed_holders_tier_is_free_within_its_lease_across_a_restart(own_server: PrefectServer) -> None:
    holder = subprocess.run(
        [sys.executable, "-c", HOLD_AND_DIE],
        env={**os.environ, **own_server.client_env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "held" in holder.stdout, holder.stderr
    assert slots() == (1, True)
    own_server.stop()
    own_server.start()  # the machine came back: the lease is still on disk, and expires
    wait_until(lambda: slots()[0], done=lambda n: n == 0, failed=lambda _: None, what="the slot freed", timeout=150)
    assert not busy()
