"""The session tier's verified VIP URL, handed to the business tier that `scale-out-cluster` runs beside it.

The business tier's image, CLB and servers need nothing of the session tier; only its new servers need the new
`authServerUrl` before they serve traffic. So the cluster runs both tiers at once: the session tier publishes its
URL once its VIP answers, the business tier waits for it after launching and repoints its new servers to it before
binding them. Each tier flow run finds the other by their shared run key; a tier flow run on its own has no
partner and neither publishes to nor waits for anyone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()
_OPEN: dict[str, SessionUrl] = {}  # by run key, while a cluster run of both tiers is under way


class SessionTierFailed(Exception):
    pass


class SessionUrl:
    def __init__(self, run_key: str) -> None:
        self.run_key = run_key
        self.url: str | None = None
        self.failure: str | None = None
        self._ready = threading.Event()

    def publish(self, url: str) -> None:
        self.url = url
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        if not self._ready.is_set():
            self.failure = f"{type(error).__name__}: {error}"
            self._ready.set()

    def wait(self, timeout: float) -> str:
        if not self._ready.wait(timeout):
            raise SessionTierFailed(f"the session tier of run {self.run_key} gave no VIP within {timeout:g}s")
        if self.url is None:
            raise SessionTierFailed(f"the session tier of run {self.run_key} failed: {self.failure}")
        return self.url


@contextlib.contextmanager
def session_url(run_key: str) -> Iterator[SessionUrl]:
    """Open the handoff for both tiers of run `run_key`; it closes (and fails any waiter) when the block ends."""
    handoff = SessionUrl(run_key)
    with _LOCK:
        _OPEN[run_key] = handoff
    try:
        yield handoff
    except BaseException as error:
        handoff.fail(error)
        raise
    finally:
        with _LOCK:
            _OPEN.pop(run_key, None)
        handoff.fail(RuntimeError("the cluster run ended"))


def publish(run_key: str, url: str) -> None:
    """The session tier's VIP answers at `url`: a business tier running beside it may use it (no-op alone)."""
    with _LOCK:
        handoff = _OPEN.get(run_key)
    if handoff is not None:
        handoff.publish(url)


def partner(run_key: str) -> SessionUrl | None:
    """The session tier running beside this business tier, if any."""
    with _LOCK:
        return _OPEN.get(run_key)
