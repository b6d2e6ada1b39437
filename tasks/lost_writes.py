"""Writes whose answer was lost, and the later writes that must not be overtaken by them.

A request that timed out (or whose connection dropped, or whose gateway answered 502) may still take effect, later:
after the retry that succeeded, and after the run's next write of the same value. Tencent's API has no conditional
write (no version to compare), so a write of another value waits until every lost write of that value can no longer
land (`tasks.cloud.lost_write_window` after it was sent): then the later write is the last. Only this process's own
lost writes are known; a lost write costs that wait once, a clean run nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from tasks.cloud import answer_lost, lost_write_window, run_logger

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Lost:
    value: Any
    until: float  # time.monotonic() after which it can no longer take effect


_lost: dict[Hashable, list[_Lost]] = {}  # (what is written, e.g. a group's desired capacity) -> lost writes
_guard = threading.Lock()


def write_outlasting(what: Hashable, value: Any, write: Callable[[], _T]) -> _T:
    """`write()` of `value` to `what`, once no lost write of another value to it can still land; if its own answer is
    lost, it is kept for the next write."""
    outlast(what, unless=value)
    sent = time.monotonic()
    try:
        return write()
    except Exception as exc:
        if answer_lost(exc):
            with _guard:
                _lost.setdefault(what, []).append(_Lost(value, sent + lost_write_window()))
        raise


def landing_deadline() -> float:
    """Seconds from now until no lost write this process knows of can still take effect (0: none can): another
    process that undoes this one's writes starts no sooner (`outlast` cannot wait for it there)."""
    with _guard:
        now = time.monotonic()
        return max([w.until - now for writes in _lost.values() for w in writes] + [0.0])


def outlast(what: Hashable, unless: Any = None) -> None:
    """Return once no lost write to `what` can still take effect (those of the value `unless` may: they write what
    the caller wants)."""
    with _guard:
        now = time.monotonic()
        pending = [w for w in _lost.pop(what, []) if w.until > now]
        if pending:
            _lost[what] = pending
        until = max((w.until for w in pending if w.value != unless), default=now)
    if until > now:
        run_logger().warning(
            "a write to %s whose answer was lost may still land: waiting %.1fs before writing another value",
            what,
            until - now,
        )
        time.sleep(until - now)  # the lost write's known deadline, not a readiness wait
