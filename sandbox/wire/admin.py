"""The `/_sandbox/` admin API: not part of Tencent's API, loopback only.

Routes take the cloud and the parsed JSON body and return JSON; other packages (the data
plane) add their own routes with `@admin_route`.
"""

import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sandbox.core.clock import ClockSettings
from sandbox.core.faults import FaultRule

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

AdminHandler = Callable[["Cloud", dict[str, Any]], Any]
ADMIN_ROUTES: dict[tuple[str, str], AdminHandler] = {}


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def admin_route(method: str, path: str) -> Callable[[AdminHandler], AdminHandler]:
    def register(handler: AdminHandler) -> AdminHandler:
        ADMIN_ROUTES[(method, f"/_sandbox/{path}")] = handler
        return handler

    return register


@admin_route("GET", "health")
def health(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "ok",
        "profile": cloud.clock.settings.profile,
        "services": sorted(cloud.backends),
        "public_pool": str(cloud.public_pool),
    }


@admin_route("POST", "reset")
def reset(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    cloud.reset()
    return {"reset": True}


@admin_route("GET", "state")
def state(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    cloud.advance(force=True)
    return cloud.dump()


@admin_route("GET", "faults")
def list_faults(cloud: "Cloud", _: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule.model_dump() for rule in cloud.faults.rules]


@admin_route("POST", "faults")
def add_fault(cloud: "Cloud", body: dict[str, Any]) -> dict[str, Any]:
    return cloud.faults.add(FaultRule.model_validate(body)).model_dump()


@admin_route("DELETE", "faults")
def clear_faults(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    cloud.faults.clear()
    return {"cleared": True}


@admin_route("GET", "clock")
def get_clock(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    return {**cloud.clock.settings.model_dump(), "now": cloud.clock.iso()}


@admin_route("POST", "clock")
def set_clock(cloud: "Cloud", body: dict[str, Any]) -> dict[str, Any]:
    """Body: any of `profile`, `time_scale`, and `advance` (seconds to move virtual time forward)."""
    advance = float(body.pop("advance", 0))
    if advance < 0:
        raise AdminError(400, "the clock only moves forward")
    merged = {**cloud.clock.settings.model_dump(), **body}
    cloud.clock.settings = ClockSettings.model_validate(merged)
    cloud.config.clock = cloud.clock.settings
    cloud.clock.advance(advance)
    cloud.advance(force=True)
    return get_clock(cloud, {})


@admin_route("GET", "config")
def get_config(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    return {"rate_limit": cloud.throttle.rate, "secret_id": cloud.config.secret_id}


@admin_route("POST", "config")
def set_config(cloud: "Cloud", body: dict[str, Any]) -> dict[str, Any]:
    """Body: `rate_limit` (requests/s per action, 0 disables throttling)."""
    rate = int(body.get("rate_limit", cloud.throttle.rate))
    if rate < 0:
        raise AdminError(400, "rate_limit must be 0 (unlimited) or more")
    cloud.throttle.rate = cloud.config.rate_limit = rate
    return get_config(cloud, {})


CHANGES_KEPT = 10_000
READ_PREFIXES = ("Describe", "Inquiry", "Get")


class RequestStats:
    """API requests per (service, action) and error codes since the last reset (for benchmarks), and the order of
    the requests that change something (`changes`, the last CHANGES_KEPT: where a run can be stopped between two
    of its changes).

    Counting is one Counter increment per request: cheap enough to stay on always. `in_flight`: the API requests
    being served now (one held by a latency rule counts until the sandbox has applied and answered it).
    """

    def __init__(self) -> None:
        self.in_flight = 0  # not reset: the requests being served do not start again
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[str] = Counter()
        self.changes: deque[str] = deque(maxlen=CHANGES_KEPT)
        self.since = time.time()

    def count(self, service: str, action: str) -> None:
        self.requests[(service, action)] += 1
        if not action.startswith(READ_PREFIXES):
            self.changes.append(f"{service}.{action}")

    def error(self, code: str) -> None:
        self.errors[code] += 1

    def report(self) -> dict[str, Any]:
        by_service: dict[str, dict[str, int]] = {}
        for (service, action), n in sorted(self.requests.items()):
            by_service.setdefault(service, {})[action] = n
        return {
            "since": self.since,
            "seconds": time.time() - self.since,
            "total": sum(self.requests.values()),
            "requests": by_service,
            "errors": dict(sorted(self.errors.items())),
            "changes": list(self.changes),
            "in_flight": self.in_flight,
        }


_STATS: "weakref.WeakKeyDictionary[Cloud, RequestStats]" = weakref.WeakKeyDictionary()


def request_stats(cloud: "Cloud") -> RequestStats:
    """The request counter of one cloud (made on first use)."""
    stats = _STATS.get(cloud)
    if stats is None:
        stats = _STATS[cloud] = RequestStats()
    return stats


@admin_route("GET", "stats")
def get_stats(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    """API requests per service and action (and error codes) since the sandbox started or the last reset."""
    return request_stats(cloud).report()


@admin_route("POST", "stats/reset")
def reset_stats(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    request_stats(cloud).reset()
    return {"reset": True}
