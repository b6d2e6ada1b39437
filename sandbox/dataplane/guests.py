"""The guests: the apps running on each server, supervised in-process (no subprocess per server).

The data plane calls `boot(instance, disk)` when a server reaches RUNNING (the apps whose units are
enabled on its disk start: auto-start, see `apps/layout.py`), `halt(instance_id)` when it leaves
RUNNING, and `control(instance_id, argv, cwd)` for the service managers' shims (`pm2`, `systemctl`,
`powershell` / `iisreset`, see `apps/commands.py`). Each server has one HTTP front (`apps/front.py`)
on its addresses at `app_port` while any app is installed; it routes `/mina_auth/...` to the session
service and everything else to the business app, and resets connections the server's security
groups do not admit on `app_port`.

Health: `GET /health` (the business app, or the session service on a session server) and
`GET /mina_auth/health`: 200 with `"status": "up"` (or "degraded": see apps/weapp.py), 503 with
`"status": "down"`, the app's state and the reason when the app is stopped or failed to start.

A start fails, leaving the app down (state "errored", the reason in `status()`, health and the
command's output, exit code 1) when its config file is missing or malformed, or when a fault rule
fires: `POST /_sandbox/faults {"service": "guest", "action": "<app>.<verb>", "error_message": ...}`
with <app> the unit name (mina_auth, node-weapp-demo, tomcat, Default Web Site) and <verb> `start`
(boot, or start of a stopped app) or `restart` (an app that had started before); action None
matches every guest start. `"action": "<instance id>/<app>.<verb>"` fires on that server only.
"""

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.core.cloud import Cloud
from sandbox.dataplane.apps.front import Front, HttpRequest, HttpResponse, json_response
from sandbox.dataplane.apps.layout import Unit, guest_path, read_units
from sandbox.dataplane.apps.mina_auth import ConfigError, MinaAuth
from sandbox.dataplane.apps.weapp import Weapp

log = logging.getLogger("sandbox.guests")
ONLINE, STOPPED, ERRORED = "online", "stopped", "errored"


@dataclass
class AppRun:
    """One app's life on one server."""

    unit: Unit
    state: str = STOPPED
    reason: str | None = None
    app: MinaAuth | Weapp | None = None
    started_at: float | None = None
    restarts: int = 0

    def describe(self) -> dict[str, Any]:
        loaded = self.app.describe() if self.app else {}
        return {
            "name": self.unit.name,
            "kind": self.unit.kind,
            "manager": self.unit.manager,
            "config": self.unit.config,
            "enabled": self.unit.enabled,
            "state": self.state,
            "reason": self.reason,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "loaded": loaded,
        }


@dataclass
class GuestServer:
    instance_id: str
    region: str
    platform: str
    private_ip: str
    addresses: list[str]
    security_group_ids: list[str]
    disk: Path
    apps: dict[str, AppRun] = field(default_factory=dict)
    unit_errors: list[str] = field(default_factory=list)
    front: Front | None = None
    front_error: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def of_kind(self, kind: str) -> AppRun | None:
        """The app of this kind that serves requests: an online one first (e.g. tomcat after pm2 stop)."""
        runs = [run for run in self.apps.values() if run.unit.kind == kind]
        online = [run for run in runs if run.state == ONLINE]
        started = [run for run in runs if run.started_at is not None or run.unit.enabled]
        return (online or started or runs or [None])[0]

    def units(self, manager: str) -> list[AppRun]:
        return [run for run in self.apps.values() if run.unit.manager == manager]


class Guests:
    def __init__(self, cloud: Cloud, app_port: int) -> None:
        self.cloud = cloud
        self.app_port = app_port
        self.servers: dict[str, GuestServer] = {}

    # ---- lifecycle, called by the data plane -------------------------------------------------
    async def boot(self, instance: Any, disk: Path) -> None:
        """Start the apps enabled on the disk (a unit file that cannot be read is reported, not fatal)."""
        if instance.instance_id in self.servers:
            await self.halt(instance.instance_id)
        addresses = [ip for ip in (instance.private_ip, getattr(instance, "public_ip", None)) if ip]
        server = GuestServer(
            instance_id=instance.instance_id,
            region=instance.region,
            platform=getattr(instance, "platform", "CentOS"),
            private_ip=instance.private_ip,
            addresses=addresses,
            security_group_ids=list(getattr(instance, "security_group_ids", [])),
            disk=disk,
        )
        self.servers[instance.instance_id] = server
        async with server.lock:
            units, server.unit_errors = read_units(disk)
            for unit in units:
                server.apps[unit.name] = AppRun(unit)
            if units or server.unit_errors:
                await self._ensure_front(server)
            for run in server.apps.values():
                if run.unit.enabled:
                    await self.start_app(server, run)

    async def halt(self, instance_id: str) -> None:
        server = self.servers.pop(instance_id, None)
        if server is None:
            return
        async with server.lock:  # a command in flight finishes first, so it cannot re-open the front after this
            for run in server.apps.values():
                run.state, run.app, run.reason = STOPPED, None, None
            if server.front is not None:
                await server.front.stop()
                server.front = None

    async def stop(self) -> None:
        for instance_id in list(self.servers):
            await self.halt(instance_id)

    async def control(self, instance_id: str, argv: list[str], cwd: str) -> tuple[int, str]:
        """Run a service-manager command (pm2 / systemctl / powershell / iisreset) on a server."""
        from sandbox.dataplane.apps.commands import run_command

        server = self.servers.get(instance_id)
        if server is None:
            return 1, f"{instance_id}: the server is not running\n"
        async with server.lock:
            return await run_command(self, server, argv, cwd or "/")

    # ---- queries -------------------------------------------------------------------------------
    def server(self, instance_id: str) -> GuestServer | None:
        return self.servers.get(instance_id)

    def disk(self, instance_id: str) -> Path | None:
        server = self.servers.get(instance_id)
        return server.disk if server else None

    def status(self, instance_id: str) -> dict[str, Any]:
        server = self.servers.get(instance_id)
        if server is None:
            return {"instance_id": instance_id, "running": False, "apps": {}}
        return {
            "instance_id": instance_id,
            "running": True,
            "addresses": server.addresses,
            "port": self.app_port,
            "listening": bool(server.front and server.front.listening),
            "front_error": server.front_error,
            "disk": str(server.disk),
            "unit_errors": server.unit_errors,
            "apps": {name: run.describe() for name, run in server.apps.items()},
        }

    # ---- app control, used by apps/commands.py and the seed -------------------------------------
    async def start_app(self, server: GuestServer, run: AppRun) -> AppRun:
        """(Re)start one app: read its config from the disk now; on any failure leave it down with the reason."""
        verb = "restart" if run.started_at is not None else "start"
        run.state, run.app = STOPPED, None
        failure = self._fault(server.instance_id, run.unit.name, verb)
        if failure is None:
            failure = await self._ensure_front(server)
        app = None
        if failure is None:
            app, failure = self._load(server, run.unit)
        if failure is not None:
            run.state, run.reason = ERRORED, failure
            log.info("guest %s on %s failed to %s: %s", run.unit.name, server.instance_id, verb, failure)
            return run
        run.app, run.state, run.reason = app, ONLINE, None
        if verb == "restart":
            run.restarts += 1
        run.started_at = self.cloud.clock.now()
        return run

    async def stop_app(self, run: AppRun) -> None:
        run.state, run.app, run.reason = STOPPED, None, None

    def reload_units(self, server: GuestServer) -> None:
        """Pick up unit files written since boot (`systemctl daemon-reload`); running apps keep running."""
        units, server.unit_errors = read_units(server.disk)
        for unit in units:
            self.add_unit(server, unit)

    def add_unit(self, server: GuestServer, unit: Unit) -> AppRun:
        run = server.apps.get(unit.name)
        if run is None:
            run = server.apps[unit.name] = AppRun(unit)
        else:
            run.unit = unit
        return run

    def _load(self, server: GuestServer, unit: Unit) -> tuple[MinaAuth | Weapp | None, str | None]:
        try:
            path = guest_path(server.disk, unit.config)
            text = path.read_text()
        except FileNotFoundError:
            return None, f"{unit.config}: no such file"
        except (OSError, ValueError) as error:
            return None, f"{unit.config}: cannot be read ({type(error).__name__})"
        try:
            if unit.kind == "mina_auth":
                return MinaAuth(text, self.cloud.clock.now), None
            return Weapp(text, server.private_ip, self.cloud.clock.now), None
        except ConfigError as error:
            return None, f"{unit.config}: {error}"

    def _fault(self, instance_id: str, name: str, verb: str) -> str | None:
        rules = self.cloud.faults.rules
        if not any(rule.service == "guest" for rule in rules):
            return None  # never count other services' catch-all rules against a guest start
        fired = [r for r in self.cloud.faults.pick("guest", f"{instance_id}/{name}.{verb}") if r.service == "guest"]
        fired = fired or [r for r in self.cloud.faults.pick("guest", f"{name}.{verb}") if r.service == "guest"]
        return f"injected fault: {fired[0].error_message}" if fired else None

    async def _ensure_front(self, server: GuestServer) -> str | None:
        if server.front is not None:
            return None
        if self.servers.get(server.instance_id) is not server:
            return "the server is shutting down"
        front = Front(
            server.addresses, self.app_port, lambda request: self._route(server, request), self._admits(server)
        )
        try:
            await front.start()
        except OSError as error:
            server.front_error = f"cannot listen on port {self.app_port}: {error.strerror or error}"
            return server.front_error
        server.front, server.front_error = front, None
        return None

    def _admits(self, server: GuestServer) -> Any:
        def admits(peer_ip: str) -> bool:
            instance = self.cloud.cvm.state.instances.get(server.instance_id)  # groups may have changed since boot
            groups = list(instance.security_group_ids) if instance is not None else server.security_group_ids
            check = getattr(self.cloud.vpc, "admits", None)
            if check is None:  # a vpc backend without security-group enforcement admits everyone
                return True
            return bool(check(groups, peer_ip, self.app_port))

        return admits

    # ---- request routing -----------------------------------------------------------------------
    async def _route(self, server: GuestServer, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/mina_auth" or path.startswith("/mina_auth/"):
            run = server.of_kind("mina_auth")
            if path == "/mina_auth/health":
                return self._health(run)
        else:
            run = server.of_kind("weapp")
            if path == "/health" and (run is None or run.state != ONLINE):
                return self._health(run or server.of_kind("mina_auth"))
        if run is None:
            return json_response(404, {"error": f"no app serves {request.path} on this server"})
        if run.state != ONLINE or run.app is None:
            return json_response(502, {"error": f"{run.unit.name} is {run.state}", "reason": run.reason})
        response = await run.app.handle(request)
        if path == "/health":  # the business app's own health, plus which app and since when
            payload = json.loads(response.body)
            payload.update({"app": run.unit.name, "started_at": run.started_at})
            return json_response(response.status, payload)
        return response

    def _health(self, run: AppRun | None) -> HttpResponse:
        if run is None:
            return json_response(404, {"status": "absent", "error": "no such app on this server"})
        if run.state != ONLINE or run.app is None:
            body = {"status": "down", "app": run.unit.name, "state": run.state, "reason": run.reason}
            return json_response(503, body)
        return json_response(
            200, {"status": "up", "app": run.unit.name, "started_at": run.started_at, **run.app.describe()}
        )


import sandbox.dataplane.admin_seed  # noqa: E402, F401  (registers POST /_sandbox/seed, GET /_sandbox/guests)
