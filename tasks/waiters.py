"""One waiter for every asynchronous thing the flows wait on (images, servers, CLB tasks, health).

`wait_until` polls one describe with backoff until a deadline; `wait_all` waits on many ids with
ONE describe per poll (per batch of up to 100 ids), so a wait costs at most one request per server.
A terminal failure state fails fast with the cloud's own message; running out of time says what
was last seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from tasks.cloud import is_retryable

T = TypeVar("T")

Progress = Callable[[Any, float], None]  # (last state, seconds elapsed)


class WaitTimeout(Exception):
    """The deadline passed; `last_state` is what was seen last ({id: state} for batched waits)."""

    def __init__(self, what: str, last_state: Any, timeout: float, finished: Mapping[str, Any] | None = None) -> None:
        self.what = what
        self.last_state = last_state
        self.timeout = timeout
        self.finished = dict(finished or {})  # batched waits: the ids that did finish
        super().__init__(f"timed out after {timeout:g}s waiting for {what}; last state: {last_state!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (WaitTimeout, (self.what, self.last_state, self.timeout, self.finished))


class WaitFailed(Exception):
    """A terminal failure state; `message` is the cloud's own, `failures` {id: message} for batched waits."""

    def __init__(
        self,
        what: str,
        message: str,
        failures: Mapping[str, str] | None = None,
        finished: Mapping[str, Any] | None = None,
    ) -> None:
        self.what = what
        self.message = message
        self.failures = dict(failures or {})
        self.finished = dict(finished or {})
        super().__init__(f"{what} failed: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (WaitFailed, (self.what, self.message, self.failures, self.finished))


class Backoff:
    """Poll delays: `first`, then x`factor` each time, at most `maximum`, never past `deadline`."""

    def __init__(self, first: float, maximum: float, factor: float = 1.5) -> None:
        self.next = first
        self.maximum = max(first, maximum)
        self.factor = factor

    def delay(self, remaining: float) -> float:
        delay = min(self.next, remaining)
        self.next = min(self.maximum, self.next * self.factor)
        return max(0.0, delay)


def wait_until(
    describe: Callable[[], T],
    done: Callable[[T], bool],
    failed: Callable[[T], str | None],
    what: str,
    timeout: float,
    first_delay: float = 0.5,
    max_delay: float = 5.0,
    on_progress: Progress | None = None,
    transient: Callable[[BaseException], bool] = is_retryable,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Poll `describe()` until `done(state)`; return that state.

    Raises `WaitFailed(what, message)` as soon as `failed(state)` returns a message, and
    `WaitTimeout(what, last_state)` at the deadline. A `describe()` that raises a transient error
    (throttling, network) counts as "not yet"; any other error propagates.
    """
    start = clock()
    deadline = start + timeout
    backoff = Backoff(first_delay, max_delay)
    last: Any = None
    while True:
        try:
            state = describe()
        except Exception as exc:
            if not transient(exc):
                raise
            last = f"<{type(exc).__name__}: {exc}>"
        else:
            last = state
            message = failed(state)
            if message is not None:
                raise WaitFailed(what, message)
            if done(state):
                return state
        now = clock()
        if on_progress is not None:
            on_progress(last, now - start)
        if now >= deadline:
            raise WaitTimeout(what, last, timeout)
        sleep(backoff.delay(deadline - now))


def _chunks(ids: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def wait_all(
    describe_many: Callable[[list[str]], Mapping[str, T]],
    ids: Iterable[str],
    done: Callable[[T], bool],
    failed: Callable[[T], str | None],
    what: str,
    timeout: float,
    first_delay: float = 0.5,
    max_delay: float = 5.0,
    batch_size: int = 100,
    fail_fast: bool = True,
    on_progress: Progress | None = None,
    transient: Callable[[BaseException], bool] = is_retryable,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, T]:
    """Wait until every id is `done`, describing only the pending ids, `batch_size` per request.

    `describe_many(ids)` returns {id: state} for the ids it found; an id missing from the answer is
    "not visible yet" (eventual consistency), not an error. Returns {id: final state}.

    Failures: with `fail_fast`, the first poll that sees any failed id raises `WaitFailed` naming
    every failed id with its message (`.failures`); otherwise failed ids stop being polled and
    `WaitFailed` is raised once the rest are done. `WaitTimeout.last_state` is {id: last state} of
    the ids still pending. Either way the exception's `.finished` holds the ids that did finish.
    """
    pending = list(dict.fromkeys(ids))
    finished: dict[str, T] = {}
    failures: dict[str, str] = {}
    last: dict[str, Any] = dict.fromkeys(pending)
    start = clock()
    deadline = start + timeout
    backoff = Backoff(first_delay, max_delay)

    def fail() -> WaitFailed:
        listed = "; ".join(f"{item}: {message}" for item, message in failures.items())
        return WaitFailed(what, listed, failures, finished)

    while pending:
        for batch in _chunks(pending, batch_size):
            try:
                states = describe_many(batch)
            except Exception as exc:
                if not transient(exc):
                    raise
                continue  # this batch is polled again next round
            for item in batch:
                if item not in states:
                    continue
                state = last[item] = states[item]
                message = failed(state)
                if message is not None:
                    failures[item] = message
                elif done(state):
                    finished[item] = state
        pending = [item for item in pending if item not in finished and item not in failures]
        if failures and (fail_fast or not pending):
            raise fail()
        if not pending:
            break
        now = clock()
        if on_progress is not None:
            on_progress({item: last[item] for item in pending}, now - start)
        if now >= deadline:
            raise WaitTimeout(what, {item: last[item] for item in pending}, timeout, finished)
        sleep(backoff.delay(deadline - now))
    return finished
