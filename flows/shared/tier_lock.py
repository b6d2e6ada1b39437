"""The tier lock: one scale operation per tier at a time, across every process that shares the Prefect server.

It is Prefect's global concurrency limit `tcscale-scale-<tier>` (limit 1), held through a lease that the server's
repossessor frees when its holder is gone (killed, its machine off) for longer than `LEASE_SECONDS`.

Built on the client's lease calls rather than `prefect.concurrency.sync.concurrency`, for three reasons found in
Prefect 3.8.8:
- its renewal gives up after three quick attempts (and, strict, cancels the run): an API outage of a couple of
  minutes turned a healthy scale-out into an undo running without its lock. Here the lease is renewed every
  `RENEW_SECONDS` and a failed renewal is retried until the lease would have expired;
- releasing a lease the server has forgotten (memory lease storage, server restarted) answers 204 and frees
  nothing: the tier stayed busy for ever. Here a forgotten lease is released by decrementing the slot it still holds;
- a limit switched off in the UI makes no lock at all. Here the limit is switched back on (and said so).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound

from tasks.waiters import WaitTimeout, wait_until

LOCK_WAIT_SECONDS = 10.0  # how long a change waits for a busy tier before it gives up (TierBusy)
LEASE_SECONDS = 300.0  # a dead holder's slot is freed this long after its last renewal
RENEW_SECONDS = 30.0  # renewed this often: an API outage shorter than LEASE_SECONDS - RENEW_SECONDS is ridden out
RETRY_SECONDS = 5.0  # a failed renewal is tried again this often until the lease would have expired

log = logging.getLogger("tcscale.tier_lock")


class TierBusy(Exception):
    pass


def limit_name(tier: str) -> str:
    return f"tcscale-scale-{tier}"


def ensure_limit(client: SyncPrefectClient, name: str) -> str:
    """The tier's limit exists, is active and allows one holder (a limit switched off would be no lock at all);
    says what it found."""
    try:
        limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        with contextlib.suppress(httpx.HTTPStatusError):  # another run created it first: fine
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        return "created"
    if limit.active and limit.limit == 1:
        return "exists"
    log.warning(
        "concurrency limit %r was %s with limit %d: tcscale set it active with limit 1 again (it is what keeps two "
        "changes of one tier apart)",
        name,
        "active" if limit.active else "switched off",
        limit.limit,
    )
    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=True, limit=1))
    return f"updated (was {limit.limit}, active {limit.active})"


def _try_acquire(client: SyncPrefectClient, name: str) -> ConcurrencyLimitWithLeaseResponse | None:
    try:
        response = client.increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
        )
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 423:  # taken: not yet
            return None
        raise
    return ConcurrencyLimitWithLeaseResponse.model_validate(response.json())


def _emit(phase: str, lease: ConcurrencyLimitWithLeaseResponse) -> None:
    """The events Prefect's own `concurrency()` emits, so the UI and the rehearsal see who held the tier when."""
    for limit in lease.limits:
        emit_event(
            f"prefect.concurrency-limit.{phase}",
            resource={
                "prefect.resource.id": f"prefect.concurrency-limit.{limit.id}",
                "prefect.resource.name": limit.name,
                "slots-acquired": "1",
                "limit": str(limit.limit),
            },
        )


class LeaseKeeper:
    """Renews the lease in a thread until stopped; knows when the server forgot it (restarted on memory storage)."""

    def __init__(self, lease_id: UUID) -> None:
        self.lease_id = lease_id
        self.expires = time.monotonic() + LEASE_SECONDS  # as far as this process knows
        self.forgotten = False  # the server answered 410 while the lease was still ours
        self.lost = False  # no renewal went through before the lease expired: the slot may be someone else's
        self._stop = threading.Event()
        context = contextvars.copy_context()  # the run's Prefect settings (its API URL) reach the thread
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=f"tier-lease-{lease_id}", daemon=True
        )
        self._thread.start()

    def renew(self, client: SyncPrefectClient) -> None:
        """One renewal; raises on a transient failure (network, 5xx)."""
        asked = time.monotonic()
        try:
            client.renew_concurrency_lease(lease_id=self.lease_id, lease_duration=LEASE_SECONDS)
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 410:
                raise
            if asked < self.expires:
                self.forgotten = True  # its slot is still counted: released by decrement at the end
            else:
                self.lost = True
            return
        self.expires = asked + LEASE_SECONDS

    def _run(self) -> None:
        with get_client(sync_client=True) as client:
            while not self._stop.wait(RENEW_SECONDS):
                self._renew_while_it_lasts(client)
                if self.forgotten or self.lost:
                    return  # nothing left to renew: `release` deals with both

    def _renew_while_it_lasts(self, client: SyncPrefectClient) -> None:
        """One renewal, retried through an API outage until the lease would have expired."""
        while not self._stop.is_set():
            try:
                self.renew(client)
                return
            except Exception as error:
                left = self.expires - time.monotonic()
                log.warning("renewing the tier lease failed (%s); %.0f s of the lease left", error, left)
                if left <= 0:
                    self.lost = True
                    log.error("the tier lease %s expired while the Prefect API was unreachable", self.lease_id)
                    return
                self._stop.wait(RETRY_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def release(client: SyncPrefectClient, name: str, keeper: LeaseKeeper, held_since: float) -> None:
    ensure_limit(client, name)  # the server decrements only active limits: one switched off meanwhile kept the slot
    if not (keeper.forgotten or keeper.lost):
        with contextlib.suppress(Exception):
            keeper.renew(client)  # does the server still know it? (a restart on memory storage forgets it)
    if keeper.forgotten:
        log.warning("the Prefect server forgot the tier lease %s (restarted?): releasing its slot directly", name)
        client.release_concurrency_slots(names=[name], slots=1, occupancy_seconds=time.monotonic() - held_since)
    elif not keeper.lost:  # a lost lease's slot was freed by the repossessor: it may be another run's now
        client.release_concurrency_slots_with_lease(keeper.lease_id)


@contextlib.contextmanager
def tier_lock(tier: str, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold the tier's lock while the block runs; TierBusy if another operation holds it past `wait_seconds`
    (default `LOCK_WAIT_SECONDS`)."""
    name = limit_name(tier)
    wait_seconds = LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds
    with get_client(sync_client=True) as client:
        ensure_limit(client, name)
        try:
            lease = wait_until(
                lambda: _try_acquire(client, name),
                done=lambda answer: answer is not None,
                failed=lambda _: None,
                what=f"the {tier} tier's lock",
                timeout=wait_seconds,
                first_delay=0.5,
                max_delay=min(5.0, max(wait_seconds / 4, 0.5)),
            )
        except WaitTimeout:
            raise TierBusy(
                f"another scale operation on the {tier} tier is running (concurrency limit {name!r} is taken): "
                "wait for it to finish, or cancel it in the Prefect UI"
            ) from None
        assert lease is not None
        held_since = time.monotonic()
        _emit("acquired", lease)
        keeper = LeaseKeeper(lease.lease_id)
        try:
            yield
        finally:
            keeper.stop()
            try:
                release(client, name, keeper, held_since)
            except Exception as error:  # the API is unreachable: the repossessor frees the slot when the lease ends
                log.error("could not release %r (%s): it is freed within %.0f s, when its lease expires", name, error,
                          LEASE_SECONDS)  # fmt: skip
            else:
                _emit("released", lease)
