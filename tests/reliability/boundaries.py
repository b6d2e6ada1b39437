"""The crash matrix's step boundaries: where a flow's process can be killed, found from the flows as they run.

A run changes the cloud only through its API requests that change something (a read changes nothing), so the
cloud a killed run leaves is decided by which of its changes went through: the boundaries that matter are the
ones between two changes. `crash_points.json` holds each flow's changes in order, as the sandbox saw them in a
clean run (`GET /_sandbox/stats` "changes"), recorded by
`TCSCALE_RECORD_MATRIX=1 uv run pytest -m slow tests/reliability -k crash_points_follow_the_code` and checked by
that slow test: a flow whose changes move makes the test fail until it is recorded again.

Boundary k is "every change before the k-th went through, the k-th did not": the k-th request (the n-th of its
action) is held by a sandbox rule (`skip` n - 1, a long latency, then an error, so it never takes effect) and the
process is SIGKILLed while it waits. The last is "every change went through": the last request takes effect and
its answer is held (a lost answer's latency), then the process is killed. The flows that rewrite the business
servers' sdk.config have one more: killed while the business app restarts (its config written, the restart command
running on the server, which finishes it).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POINTS_FILE = Path(__file__).with_name("crash_points.json")
RECORD = os.environ.get("TCSCALE_RECORD_MATRIX") == "1"
HOLD_MS = 60_000  # longer than any test waits for the kill; the held request then fails, changing nothing
RESTART_HOLD_MS = 3_000  # a business app's restart held that long: the process is killed while it restarts
REPOINTING = ("scale-out-session-tier", "scale-out-cluster", "cleanup-run")  # they restart the business app


@dataclass(frozen=True)
class Boundary:
    flow: str
    index: int  # how many of the run's changes went through before the kill (-1: the restart, between API changes)
    request: str  # "service.Action": the request the process is held at
    nth: int  # the how-manieth request of that action
    went_through: bool = False  # killed once that request took effect, its answer held (the run's last change)

    @property
    def id(self) -> str:
        if self.request == RESTART:
            return f"{self.flow}/restart-of-the-business-app"
        where = "after" if self.went_through else "at"
        return f"{self.flow}/{self.index:02d}-{where}-{self.request.split('.')[-1]}#{self.nth}"

    def hold_rule(self, business_server: str) -> dict[str, Any]:
        """The sandbox rule that holds the request until the process is killed (and then fails it)."""
        if self.request == RESTART:
            action = f"{business_server}/weapp.restart"
            return {"service": "guest", "action": action, "latency_ms": RESTART_HOLD_MS, "count": 1}
        service, action = self.request.split(".")
        rule = {"service": service, "action": action, "skip": self.nth - 1, "count": 1, "latency_ms": HOLD_MS}
        if self.went_through:  # it takes effect; its answer is held, then lost
            return {**rule, "lose_answer": True}
        return {**rule, "error_code": "InternalError", "error_message": "crash matrix: held, then killed"}


RESTART = "guest.weapp.restart"


def recorded_points() -> dict[str, list[str]]:
    """{flow: ["service.Action", ...]}: its changes in a clean run, in order."""
    return json.loads(POINTS_FILE.read_text()) if POINTS_FILE.exists() else {}


def boundaries(flow: str, changes: list[str]) -> list[Boundary]:
    """One boundary before each change, one once the last went through (and, for a flow that restarts the business
    app, one during the restart)."""
    seen: Counter[str] = Counter()
    found = []
    for index, request in enumerate(changes):
        seen[request] += 1
        found.append(Boundary(flow, index, request, seen[request]))
    if changes:
        found.append(Boundary(flow, len(changes), changes[-1], seen[changes[-1]], went_through=True))
    if flow in REPOINTING:
        found.append(Boundary(flow, -1, RESTART, 1))
    return found


def all_boundaries() -> list[Boundary]:
    return [b for flow, changes in recorded_points().items() for b in boundaries(flow, changes)]
