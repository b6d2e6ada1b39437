"""Which handler serves which (service, version, action), and which backend holds which service.

A service package registers its actions with `@action(...)` in its `responses.py` and its state
with `@backend` in its `backend.py`; `sandbox.services` imports them all.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud


@dataclass
class Request:
    """One authenticated, validated API call, as a handler sees it."""

    cloud: "Cloud"
    service: str
    version: str
    action: str
    region: str
    params: dict[str, Any]
    request_id: str
    secret_id: str
    async_failure: str | None = None  # set by a fault rule: the operation this call starts must fail
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)


Handler = Callable[[Request], dict[str, Any]]

ACTIONS: dict[tuple[str, str, str], Handler] = {}
VERSIONS: dict[str, set[str]] = {}


def action(service: str, version: str, name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ACTIONS[(service, version, name)] = handler
        VERSIONS.setdefault(service, set()).add(version)
        return handler

    return register
