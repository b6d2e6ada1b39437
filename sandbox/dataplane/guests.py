"""The guests: the apps running on each server, supervised in-process (no subprocess per server).

The data plane calls `boot(instance, disk)` when a server reaches RUNNING (the apps whose units are
enabled on its disk start: auto-start, see `apps/layout.py`), `halt(instance_id)` when it leaves
RUNNING, and `control(instance_id, argv, cwd)` for the service managers' shims (`pm2`, `systemctl`,
`powershell` / `iisreset`, see `apps/service_managers.py`).

Each app listens on its REAL port (node demo 5757, tomcat 8080, IIS and mina_auth 80; `Unit.port`),
bound at the port the sandbox's `PortMap` gives for it (ports.py), on the server's addresses, only
while the app's process runs (a stopped or crashed app refuses connections, as a real one does). A
port shared by two apps routes `/mina_auth/...` to the session service and the rest to the business
app. Connections the server's security groups do not admit on the real port are reset.

No health endpoint: only the real apps' routes (apps/weapp.py, apps/mina_auth.py). Processes have a pid
and a start time (pm2 jlist, systemctl show, Get-Process w3wp). The node demo exits 1 on an unparseable
sdk.config and pm2 restarts it again and again (`CRASH_DELAY` apart) until `MAX_RESTARTS` unstable
restarts, then shows it "errored". IIS starts its worker process (w3wp) at the first request after
a start or an app-pool recycle, as real IIS does.

Faults: `POST /_sandbox/faults {"service": "guest", "action": "<app>.<verb>", "error_message": ...}` with
<app> the unit name (mina_auth, weapp, tomcat, Default Web Site) and <verb> `start` or `restart` (an app
that had started before): the app's process fails to start (pm2: crashes, and is restarted). `"action":
"<instance id>/<app>.<verb>"` fires on that server only.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.core.emulated_cloud import Cloud
from sandbox.dataplane.apps.front import Front, HttpRequest, HttpResponse, html_response
from sandbox.dataplane.apps.layout import Unit, guest_path, read_units, write_file
from sandbox.dataplane.apps.mina_auth import ConfigError, MinaAuth
from sandbox.dataplane.apps.weapp import Weapp
from sandbox.dataplane.ports import PortMap

log = logging.getLogger("sandbox.guests")
ONLINE, STOPPED, ERRORED = "online", "stopped", "errored"
CRASH_DELAY = 0.1  # seconds between a crash and pm2's next attempt (node's own start-up time)
MAX_RESTARTS = 15  # pm2's max_restarts for unstable restarts
PM2_LOG_DIR = "/root/.pm2/logs"


@dataclass
class AppRun:
    """One app's life on one server: the manager's view (`state`) and the process (`app`, `pid`)."""

    unit: Unit
    state: str = STOPPED
    reason: str | None = None
    app: MinaAuth | Weapp | None = None
    started_at: float | None = None  # the process's start (epoch seconds)
    active_since: float | None = None  # the unit's / site's last start (systemd ActiveEnterTimestamp)
    restarts: int = 0
    pid: int | None = None
    crash_loop: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """Is something accepting connections on the app's port? IIS (http.sys) does while the site runs."""
        return self.app is not None or (self.unit.manager == "iis" and self.state == ONLINE)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.unit.name,
            "kind": self.unit.kind,
            "manager": self.unit.manager,
            "config": self.unit.config,
            "port": self.unit.real_port,
            "enabled": self.unit.enabled,
            "state": self.state,
            "reason": self.reason,
            "pid": self.pid,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "loaded": self.app.describe() if self.app else {},
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
    fronts: dict[int, Front] = field(default_factory=dict)  # real port -> its listeners
    front_errors: dict[int, str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def units(self, manager: str) -> list[AppRun]:
        return [run for run in self.apps.values() if run.unit.manager == manager]

    def on_port(self, port: int, kind: str) -> AppRun | None:
        """The app of this kind that serves this port (a listening one first)."""
        runs = [run for run in self.apps.values() if run.unit.kind == kind and run.unit.real_port == port]
        return ([run for run in runs if run.listening] or [None])[0]


class Guests:
    def __init__(self, cloud: Cloud, ports: PortMap) -> None:
        self.cloud = cloud
        self.ports = ports
        self.servers: dict[str, GuestServer] = {}
        self._next_pid = random.randint(1200, 3000)

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
            for run in server.apps.values():
                if run.unit.enabled:
                    await self.start_app(server, run)

    async def halt(self, instance_id: str) -> None:
        server = self.servers.pop(instance_id, None)
        if server is None:
            return
        async with server.lock:  # a command in flight finishes first, so it cannot re-open a front after this
            for run in server.apps.values():
                self._end_process(run)
                run.state, run.reason = STOPPED, None
            await self._sync_fronts(server)

    async def stop(self) -> None:
        for instance_id in list(self.servers):
            await self.halt(instance_id)

    async def control(self, instance_id: str, argv: list[str], cwd: str) -> tuple[int, str]:
        """Run a service-manager command (pm2 / systemctl / powershell / iisreset) on a server."""
        from sandbox.dataplane.apps.service_managers import needs_lock, run_command

        server = self.servers.get(instance_id)
        if server is None:
            return 1, f"{instance_id}: the server is not running\n"
        if not needs_lock(argv):  # fetching a URL: it may be this server's own, whose requests take the lock
            return await run_command(self, server, argv, cwd or "/")
        async with server.lock:
            return await run_command(self, server, argv, cwd or "/")

    # ---- queries -------------------------------------------------------------------------------
    def server(self, instance_id: str) -> GuestServer | None:
        return self.servers.get(instance_id)

    def disk(self, instance_id: str) -> Path | None:
        server = self.servers.get(instance_id)
        return server.disk if server else None

    def port_table(self, instance_id: str) -> dict[str, int]:
        """{real port: the port really listened on} of the apps installed on a server."""
        server = self.servers.get(instance_id)
        return self.ports.table([run.unit.real_port for run in server.apps.values()]) if server else {}

    def status(self, instance_id: str) -> dict[str, Any]:
        server = self.servers.get(instance_id)
        if server is None:
            return {"instance_id": instance_id, "running": False, "apps": {}}
        return {
            "instance_id": instance_id,
            "running": True,
            "addresses": server.addresses,
            "ports": self.port_table(instance_id),
            "listening": sorted(server.fronts),
            "front_errors": {str(port): error for port, error in server.front_errors.items()},
            "disk": str(server.disk),
            "unit_errors": server.unit_errors,
            "apps": {name: run.describe() for name, run in server.apps.items()},
        }

    # ---- app control, used by apps/service_managers.py and the seed -------------------------------------
    async def start_app(self, server: GuestServer, run: AppRun) -> AppRun:
        """(Re)start one app: its process reads its config from the disk now; a failure leaves it down, with why.

        IIS: the site starts, and its worker process only at the next request (`recycle`)."""
        verb = "restart" if run.started_at is not None or run.active_since is not None else "start"
        await self._slow_start(server.instance_id, run.unit.name, verb)
        self._end_process(run)
        if verb == "restart":
            run.restarts += 1
        run.active_since = self.cloud.clock.now()
        if run.unit.manager == "iis":
            run.state, run.reason = ONLINE, None
            failure = self._fault(server.instance_id, run.unit.name, verb)
            if failure is None:
                await self._sync_fronts(server)
                failure = server.front_errors.get(run.unit.real_port)
            if failure is not None:
                run.state, run.reason = ERRORED, failure
                await self._sync_fronts(server)
            return run
        failure = self._launch(server, run, verb)
        if failure is not None and run.unit.manager == "pm2":
            self._crashed(server, run, failure)  # pm2 shows it, restarts it, gives up after MAX_RESTARTS
            run.crash_loop = asyncio.get_running_loop().create_task(self._crash_loop(server, run))
        elif failure is not None:
            run.state, run.reason = ERRORED, failure
        await self._sync_fronts(server)
        if run.app is not None and (bind_error := server.front_errors.get(run.unit.real_port)):
            self._end_process(run)
            run.state, run.reason = ERRORED, bind_error
        return run

    async def stop_app(self, run: AppRun, server: GuestServer | None = None) -> None:
        self._end_process(run)
        run.state, run.reason = STOPPED, None
        if server is not None:
            await self._sync_fronts(server)

    async def recycle(self, server: GuestServer, run: AppRun) -> None:
        """IIS app-pool recycle: the worker process ends; the next request starts a new one."""
        self._end_process(run)
        if run.state != ONLINE:
            run.state, run.reason = ONLINE, None
            run.active_since = self.cloud.clock.now()
        run.restarts += 1
        await self._sync_fronts(server)

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

    # ---- processes -------------------------------------------------------------------------------
    def _launch(self, server: GuestServer, run: AppRun, verb: str) -> str | None:
        """Start the app's process; the reason it could not, or None."""
        run.pid, run.started_at = self._new_pid(), self.cloud.clock.now()
        failure = self._fault(server.instance_id, run.unit.name, verb)
        app = None
        if failure is None:
            app, failure = self._load(server, run.unit)
        if failure is not None:
            log.info("guest %s on %s failed to %s: %s", run.unit.name, server.instance_id, verb, failure)
            self._log(server, run, failure, error=True)
            return failure
        run.app, run.state, run.reason = app, ONLINE, None
        if isinstance(app, Weapp):
            self._log(server, run, app.startup_log())
        return None

    def _crashed(self, server: GuestServer, run: AppRun, failure: str) -> None:
        run.app, run.pid = None, None  # the process exited: pm2 restarts it, showing "online" until it gives up
        run.state, run.reason = ONLINE, failure

    async def _crash_loop(self, server: GuestServer, run: AppRun) -> None:
        unstable = 0
        while unstable < MAX_RESTARTS:
            await asyncio.sleep(CRASH_DELAY)
            async with server.lock:
                if run.crash_loop is not asyncio.current_task() or self.servers.get(server.instance_id) is not server:
                    return
                unstable += 1
                run.restarts += 1
                failure = self._launch(server, run, "restart")
                if failure is None:
                    run.crash_loop = None
                    await self._sync_fronts(server)
                    return
                self._crashed(server, run, failure)
        run.state, run.pid, run.crash_loop = ERRORED, None, None

    def _end_process(self, run: AppRun) -> None:
        if run.crash_loop is not None:
            run.crash_loop.cancel()
            run.crash_loop = None
        run.app, run.pid = None, None

    def _new_pid(self) -> int:
        self._next_pid += random.randint(3, 40)
        return self._next_pid

    def _log(self, server: GuestServer, run: AppRun, line: str, error: bool = False) -> None:
        """pm2's log files (~/.pm2/logs/<app>-out.log / -error.log), where the demo's prints land."""
        if run.unit.manager != "pm2":
            return
        name = f"{PM2_LOG_DIR}/{run.unit.name}-{'error' if error else 'out'}.log"
        with contextlib.suppress(OSError, ValueError):
            path = guest_path(server.disk, name)
            previous = path.read_text() if path.exists() else ""
            write_file(path, previous[-64_000:] + line.rstrip("\n") + "\n")

    async def _w3wp(self, server: GuestServer, run: AppRun) -> None:
        """IIS' worker process starts at a request: it loads the app (and its sdk.config) now."""
        if run.app is not None or run.state != ONLINE:
            return
        run.pid, run.started_at = self._new_pid(), self.cloud.clock.now()
        app, failure = self._load(server, run.unit)
        run.app, run.reason = app, failure

    def _load(self, server: GuestServer, unit: Unit) -> tuple[MinaAuth | Weapp | None, str | None]:
        try:
            path = guest_path(server.disk, unit.config)
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = None
        except (OSError, ValueError) as error:
            return None, f"{unit.config}: cannot be read ({type(error).__name__})"
        try:
            if unit.kind == "mina_auth":
                if text is None:
                    return None, f"{unit.config}: no such file"
                return MinaAuth(text, self.cloud.clock.now), None
            flavour = {"pm2": "node", "systemd": "java", "iis": "iis"}[unit.manager]
            return Weapp(text or "", flavour, unit.config, server.private_ip, self.ports.listen), None  # type: ignore[arg-type]
        except ConfigError as error:
            return None, str(error)

    def _fault(self, instance_id: str, name: str, verb: str) -> str | None:
        fired = self._pick(instance_id, name, verb, lambda rule: not rule.latency_ms)
        return f"injected fault: {fired[0].error_message}" if fired else None

    async def _slow_start(self, instance_id: str, name: str, verb: str) -> None:
        """A guest rule with `latency_ms` makes the (re)start take that long, then go on as usual."""
        fired = self._pick(instance_id, name, verb, lambda rule: bool(rule.latency_ms))
        if fired:
            await asyncio.sleep(sum(rule.latency_ms for rule in fired) / 1000)  # the app's own slow start-up

    def _pick(self, instance_id: str, name: str, verb: str, only: Callable[[Any], bool]) -> list[Any]:
        if not any(rule.service == "guest" for rule in self.cloud.faults.rules):
            return []  # never count other services' catch-all rules against a guest start

        def guest(rule: Any) -> bool:
            return rule.service == "guest" and only(rule)

        pick = self.cloud.faults.pick
        return pick("guest", f"{instance_id}/{name}.{verb}", guest) or pick("guest", f"{name}.{verb}", guest)

    # ---- listeners -------------------------------------------------------------------------------
    async def _sync_fronts(self, server: GuestServer) -> str | None:
        """Listen on exactly the ports of the apps that run; the bind error of a port that could not open."""
        alive = self.servers.get(server.instance_id) is server
        wanted = {run.unit.real_port for run in server.apps.values() if run.listening} if alive else set()
        for port in [p for p in server.fronts if p not in wanted]:
            await server.fronts.pop(port).stop()
        error = None
        for port in wanted - set(server.fronts):
            front = Front(
                server.addresses,
                self.ports.listen(port),
                lambda request, port=port: self._route(server, port, request),
                self._admits(server, port),
            )
            try:
                await front.start()
            except OSError as bind_error:
                error = server.front_errors[port] = (
                    f"listen EADDRINUSE: cannot listen on port {port} (served at {front.port}): "
                    f"{bind_error.strerror or bind_error}"
                )
                continue
            server.fronts[port] = front
            server.front_errors.pop(port, None)
        return error

    def _admits(self, server: GuestServer, port: int) -> Any:
        def admits(peer_ip: str) -> bool:
            instance = self.cloud.cvm.state.instances.get(server.instance_id)  # groups may have changed since boot
            groups = list(instance.security_group_ids) if instance is not None else server.security_group_ids
            check = getattr(self.cloud.vpc, "admits", None)
            if check is None:  # a vpc backend without security-group enforcement admits everyone
                return True
            return bool(check(groups, peer_ip, port))

        return admits

    # ---- request routing -----------------------------------------------------------------------
    async def _route(self, server: GuestServer, port: int, request: HttpRequest) -> HttpResponse:
        session = request.path.startswith("/mina_auth")
        run = server.on_port(port, "mina_auth" if session else "weapp")
        if run is not None and session and request.path not in ("/mina_auth/", "/mina_auth/index.php"):
            if request.path == "/mina_auth":  # Apache: a folder without its slash
                return HttpResponse(301, b"", "text/html; charset=iso-8859-1", {"Location": "/mina_auth/"})
            run = None  # no such file in the app's folder
        if run is None:  # e.g. Apache's own 404 for anything but /mina_auth/ on a session server
            return html_response(404, f"<h1>Not Found</h1><p>The requested URL {request.path} was not found.</p>")
        if run.unit.manager == "iis":
            async with server.lock:
                await self._w3wp(server, run)
            if run.app is None:
                return html_response(503, "<h1>Service Unavailable</h1><p>HTTP Error 503.</p>")
        if run.app is None:
            return html_response(502, "<h1>502 Bad Gateway</h1>")
        response = await run.app.handle(request)
        # Hook for the control plane: each request an app served (sandbox.core.metrics derives CPU and traffic).
        self.cloud.events.emit("guest.request", server.instance_id, len(request.body), len(response.body))
        return response


import sandbox.dataplane.admin_seed  # noqa: E402, F401  (registers POST /_sandbox/seed, GET /_sandbox/guests)
