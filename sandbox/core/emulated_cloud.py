"""The whole emulated cloud: every service backend, the clock, faults, throttling and persistence."""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sandbox.core.backend import BACKENDS, Backend
from sandbox.core.clock import Clock, ClockSettings
from sandbox.core.faults import Faults
from sandbox.core.metrics import ServerMetrics
from sandbox.core.pools import parse_pool, public_pool_for
from sandbox.core.throttle import Throttle

DEFAULT_SECRET_ID = "AKIDsandbox0000000000000000000000000"
DEFAULT_SECRET_KEY = "sandboxsecretkey0000000000000000"  # documented, sandbox-only


class SandboxConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9100
    secret_id: str = DEFAULT_SECRET_ID
    secret_key: str = Field(DEFAULT_SECRET_KEY, repr=False)
    state_dir: Path | None = None
    rate_limit: int = Field(20, ge=0, description="requests/s per action; 0 disables throttling")
    clock: ClockSettings = Field(default_factory=ClockSettings)
    dataplane: bool = Field(True, description="run real servers (SSH, apps) and load balancers (TCP)")
    ssh_port: int | None = Field(None, description="servers' SSH port; None: 22 when bindable, else 2222")
    app_port: int | None = Field(
        None,
        description="serves real port 80 (p < 1024 at app_port - 80 + p); None: real ports if bindable, else 10000 + p",
    )
    public_pool: str | None = Field(
        None,
        description="the /16 (or smaller) of 127.0.0.0/8 for public IPs and OPEN CLB VIPs; None: the first of "
        "127.100.0.0/16, 127.101.0.0/16, ... that no other sandbox on this machine holds",
    )


Listener = Callable[..., None]


class Events:
    """Synchronous notifications from backends (e.g. `instance.running`) to whoever listens (data plane)."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def subscribe(self, name: str, listener: Listener) -> None:
        self._listeners.setdefault(name, []).append(listener)

    def unsubscribe(self, name: str, listener: Listener) -> None:
        if listener in self._listeners.get(name, []):
            self._listeners[name].remove(listener)

    def emit(self, name: str, *args: Any) -> None:
        for listener in self._listeners.get(name, []):
            listener(*args)


class Cloud:
    def __init__(self, config: SandboxConfig | None = None) -> None:
        import sandbox.services  # noqa: F401  (registers every backend and action)

        self.config = config or SandboxConfig()
        self.clock = Clock(self.config.clock)
        self.public_pool = parse_pool(self.config.public_pool or public_pool_for(self))
        self.faults = Faults()
        self.throttle = Throttle(self.config.rate_limit)
        self.events = Events()
        self.metrics = ServerMetrics(self.clock.now)
        self.events.subscribe("guest.request", self.metrics.record)
        self.backends: dict[str, Backend] = {name: cls(self) for name, cls in BACKENDS.items()}
        self._next_due: float | None = None
        self._stale = True
        self.dirty = False
        self.load()

    def __getattr__(self, service: str) -> Backend:
        # `cloud.cvm`, `cloud.clb`, ... (only called when normal lookup fails)
        backends = self.__dict__.get("backends", {})
        if service in backends:
            return backends[service]
        raise AttributeError(service)

    @property
    def secrets(self) -> dict[str, str]:
        return {self.config.secret_id: self.config.secret_key}

    def advance(self, force: bool = False) -> None:
        """Apply every due asynchronous transition, in every service."""
        now = self.clock.now()
        if not (force or self._stale) and (self._next_due is None or now < self._next_due):
            return
        pending = [due for b in self.backends.values() if (due := b.advance(now)) is not None]
        self._next_due = min(pending) if pending else None
        self._stale = False
        self.dirty = True

    def touched(self) -> None:
        """A write happened (or the clock moved): re-examine transitions, persist on the next flush."""
        self.dirty = True
        self._stale = True

    def reset(self) -> None:
        for name, cls in BACKENDS.items():
            self.backends[name] = cls(self)
        self.faults.clear()
        self.metrics.clear()
        self.clock.settings.offset = 0.0  # virtual time back to wall time: tests start from "now"
        self.events.emit("reset")
        self.touched()

    def dump(self) -> dict[str, Any]:
        return {
            "clock": self.clock.settings.model_dump(),
            "services": {name: b.dump() for name, b in self.backends.items()},
        }

    # Persistence: one JSON snapshot in --state-dir, written atomically.
    @property
    def _state_file(self) -> Path | None:
        return self.config.state_dir / "state.json" if self.config.state_dir else None

    def load(self) -> None:
        path = self._state_file
        if path is None or not path.exists():
            return
        data = json.loads(path.read_text())
        self.clock.settings = ClockSettings.model_validate(data.get("clock", {}))
        for name, state in data.get("services", {}).items():
            if name in self.backends:
                self.backends[name].load(state)

    def flush(self) -> None:
        path = self._state_file
        if not self.dirty:
            return
        self.dirty = False
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.dump(), ensure_ascii=False))
        os.replace(tmp, path)
