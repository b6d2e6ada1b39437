"""The business app on a server, over SSH: which process runs it, whether a restart really took, and whether
the server itself reaches a URL (its own address is what security groups and CLBs see).

- `process_identity`: the app's process as its manager reports it: `pm2 jlist` (node), `systemctl show`
  (tomcat), `Get-Process w3wp` (IIS). Its identity (pid + start) changes when the app restarts.
- `wait_restarted`: after a restart command, poll until the app answers over HTTP (on IIS that first
  request starts the worker process) with a new identity, then confirm it HOLDS for `settle_seconds`:
  a crash loop (the identity changing again, pm2 "errored", HTTP down) fails, naming the host and state.
- `reach_from_server`: `curl` (Linux) / `Invoke-WebRequest` (Windows) POSTs the MA probe to a URL from
  the server itself; a well-formed MA answer passes.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from datetime import UTC, datetime
from typing import Any

from fabric import Connection
from pydantic import BaseModel, Field

from tasks.health import AUTH_PROBE, HealthCheck, Probe, is_ma_answer, probe_app_up
from tasks.models import RuntimeProfile
from tasks.remote import RemoteCommandFailed, RemoteError, run
from tasks.ssh_keys import known_host_name
from tasks.waiters import WaitFailed, WaitTimeout, wait_until

FAILED_STATES = {"errored", "failed"}  # pm2 gave up / systemd unit failed: no point waiting longer
_UNSAFE_FOR_POWERSHELL = re.compile(r"['\"`$\s]")


class AppProcess(BaseModel):
    """The app's process as its manager reports it."""

    running: bool
    identity: str = Field(description="pid + start time; changes when the app restarts ('' when none runs)")
    started_at: float | None = Field(None, description="process start, epoch seconds (when parseable)")
    state: str = Field("", description="the manager's word: online / errored / active / failed / ...")
    restarts: int | None = Field(None, description="pm2 restart_time")
    detail: str = ""


class AppNotRestarted(Exception):
    """The app did not come back, or did not stay up, after a restart. The message names the host."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.message = message
        super().__init__(f"{host}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (AppNotRestarted, (self.host, self.message))


# ---- which process runs the app ------------------------------------------------------------------------
def process_identity(conn: Connection, profile: RuntimeProfile, timeout: float = 30.0) -> AppProcess:
    """Run the profile's identity command and read the app's process from its output."""
    result = run(conn, profile.identity_command, timeout=timeout, check=False)
    command = profile.identity_command.lower()
    if "jlist" in command:
        return from_pm2(result.stdout, profile.app_name)
    if "systemctl" in command:
        return from_systemd(result.stdout, profile.app_name)
    if "get-process" in command:
        return from_w3wp(result.stdout)
    raise ValueError(f"no reader for the identity command {profile.identity_command!r}")


def from_pm2(output: str, name: str) -> AppProcess:
    start = output.find("[")
    try:
        apps = json.loads(output[start:]) if start >= 0 else None
    except ValueError:
        apps = None
    if not isinstance(apps, list):
        return AppProcess(running=False, identity="", detail=f"pm2 jlist: not a JSON list: {output.strip()[:200]!r}")
    app = next((a for a in apps if isinstance(a, dict) and a.get("name") == name), None)
    if app is None:
        return AppProcess(running=False, identity="", state="absent", detail=f"pm2 has no app {name!r}")
    env = app.get("pm2_env") or {}
    status, pid = str(env.get("status", "")), int(app.get("pid") or 0)
    uptime = env.get("pm_uptime")
    started = uptime / 1000 if isinstance(uptime, int | float) and uptime > 0 else None
    restarts = env.get("restart_time") if isinstance(env.get("restart_time"), int) else None
    running = status == "online" and pid > 0
    return AppProcess(
        running=running,
        identity=f"pid {pid} since {uptime}" if running else "",
        started_at=started,
        state=status,
        restarts=restarts,
        detail=f"pm2 app {name}: {status}, pid {pid}, restarts {restarts}",
    )


def from_systemd(output: str, unit: str) -> AppProcess:
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    state, pid, since = (
        values.get("ActiveState", ""),
        values.get("MainPID", "0"),
        values.get("ActiveEnterTimestamp", ""),
    )
    running = state == "active" and pid.isdigit() and int(pid) > 0
    return AppProcess(
        running=running,
        identity=f"pid {pid} since {since}" if running else "",
        started_at=_systemd_epoch(since),
        state=state,
        detail=f"{unit}.service: {state or 'unknown'}, MainPID {pid}, since {since or '-'}",
    )


def _systemd_epoch(text: str) -> float | None:
    """`Tue 2026-12-01 17:13:56 UTC` -> epoch seconds (other zones: None, their names are ambiguous)."""
    parts = text.split()
    if len(parts) != 4 or parts[3] not in ("UTC", "GMT"):
        return None
    try:
        return datetime.strptime(f"{parts[1]} {parts[2]}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def from_w3wp(output: str) -> AppProcess:
    text = output.strip()
    if not text:
        return AppProcess(running=False, identity="", state="no worker", detail="no w3wp process runs")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        return AppProcess(running=False, identity="", detail=f"Get-Process: not JSON: {text[:200]!r}")
    workers = parsed if isinstance(parsed, list) else [parsed]
    rows = sorted((int(w.get("Id", 0)), _windows_epoch(w.get("StartTime"))) for w in workers if isinstance(w, dict))
    starts = [start for _, start in rows if start is not None]
    identity = ", ".join(f"pid {pid} since {start}" for pid, start in rows)
    return AppProcess(
        running=bool(rows),
        identity=identity,
        started_at=max(starts) if starts else None,
        state="running",
        detail=f"w3wp: {identity}",
    )


def _windows_epoch(value: Any) -> float | None:
    """ConvertTo-Json's `\\/Date(ms)\\/` (PowerShell 5.1) or an ISO time (PowerShell 7)."""
    if not isinstance(value, str):
        return None
    if match := re.search(r"Date\((-?\d+)", value):
        return int(match.group(1)) / 1000
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


# ---- the restart took, and holds -----------------------------------------------------------------------
def wait_restarted(
    conn: Connection,
    profile: RuntimeProfile,
    before: AppProcess,
    host: str,
    port: int,
    check: HealthCheck,
    timeout: float,
) -> AppProcess:
    """Wait until the app answers over HTTP with a new process identity, then confirm it holds for settle_seconds."""
    app = profile.app_name

    def observe() -> tuple[Probe, AppProcess]:
        up = probe_app_up(host, port, check)  # first: on IIS this request starts the worker process
        return up, process_identity(conn, profile)

    def gave_up(state: tuple[Probe, AppProcess]) -> str | None:
        process = state[1]
        return f"{app} is {process.state}: {process.detail}" if process.state in FAILED_STATES else None

    try:
        _, after = wait_until(
            observe,
            done=lambda s: s[0].ok and s[1].running and s[1].identity != before.identity,
            failed=gave_up,
            what=f"{app} on {host} to restart",
            timeout=timeout,
            first_delay=0.1,
            max_delay=2.0,
            transient=lambda error: isinstance(error, RemoteError),
        )
    except WaitFailed as error:
        raise AppNotRestarted(host, f"{app} did not restart: {error.message}") from None
    except WaitTimeout as error:
        raise AppNotRestarted(host, f"{app} did not come back within {timeout:g}s: {_last(error.last_state)}") from None
    _holds(observe, after, host, app, check.settle_seconds)
    return after


def _holds(observe: Any, after: AppProcess, host: str, app: str, settle: float) -> None:
    """Look again at the end of the settle window: a new process (a restart in between changes the identity, pid +
    start), a failed or stopped one, or HTTP down fails. One look, not a poll: each look is an SSH command and an
    HTTP request on the server, and a repoint of 100 servers is bound by them."""
    if settle <= 0:
        return

    def broken(state: tuple[Probe, AppProcess]) -> str | None:
        up, process = state
        if process.state in FAILED_STATES or not process.running:
            return f"{app} went down after it restarted ({process.detail})"
        if process.identity != after.identity:
            return (
                f"{app} restarted again (crash loop?): was {after.identity}, now {process.identity} ({process.detail})"
            )
        if not up.ok:
            return f"{app} stopped answering after it restarted: {up.detail}"
        return None

    time.sleep(settle)
    try:
        wait_until(
            observe,
            done=lambda _: True,  # the first look that SSH and HTTP answer decides
            failed=broken,
            what=f"{app} on {host} to stay up",
            timeout=settle + 30,
            first_delay=0.2,
            max_delay=2.0,
            transient=lambda error: isinstance(error, RemoteError),
        )
    except WaitFailed as error:
        raise AppNotRestarted(host, error.message) from None
    except WaitTimeout as error:
        raise AppNotRestarted(host, f"{app}: could not confirm it stays up: {_last(error.last_state)}") from None


def _last(state: Any) -> str:
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], tuple):
        state = state[0]
    if isinstance(state, tuple) and len(state) == 2:
        return f"HTTP: {state[0].detail}; process: {state[1].detail}"
    return str(state)


# ---- a URL, from the server itself ---------------------------------------------------------------------
def reach_command(profile: RuntimeProfile, url: str, timeout: float) -> str:
    """The command that POSTs the MA probe to `url` from the server and prints the answer's body."""
    body = json.dumps(AUTH_PROBE, separators=(",", ":"))
    seconds = max(1, round(timeout))
    if profile.platform == "windows":
        if _UNSAFE_FOR_POWERSHELL.search(url):
            raise ValueError(f"refusing to put {url!r} in a PowerShell command")
        script = (
            f"(Invoke-WebRequest -UseBasicParsing -Method POST -ContentType 'application/json' -Body '{body}'"
            f" -Uri '{url}' -TimeoutSec {seconds}).Content"
        )
        return 'powershell -NoProfile -NonInteractive -Command "' + script.replace('"', '\\"') + '"'
    return (
        f"curl -sS -m {seconds} -X POST -H 'Content-Type: application/json' -d {shlex.quote(body)} {shlex.quote(url)}"
    )


def reach_from_server(conn: Connection, profile: RuntimeProfile, url: str, timeout: float) -> Probe:
    """POST the MA probe to `url` FROM the server (curl / Invoke-WebRequest); ok on a well-formed MA answer."""
    target = f"{conn.host} -> {url}"
    started = time.perf_counter()
    command = reach_command(profile, url, timeout)
    result = run(conn, command, timeout=timeout + 30, check=False)
    if result.exit == -1:  # the SSH connection dropped: a finding about SSH, not about the VIP (a retry may help)
        raise RemoteCommandFailed(known_host_name(conn.host, conn.port), command, -1, result.stdout, result.stderr)
    elapsed = (time.perf_counter() - started) * 1000
    try:
        body = json.loads(result.stdout)
    except ValueError:
        body = None
    if result.exit == 0 and is_ma_answer(body):
        detail = f"from {conn.host}: MA answer returnCode {body['returnCode']} ({body.get('returnMessage')})"
        return Probe(target=target, ok=True, detail=detail, elapsed_ms=elapsed, body=body)
    said = (result.stderr.strip() or result.stdout.strip())[:300]
    tool = "Invoke-WebRequest" if profile.platform == "windows" else "curl"
    detail = f"from {conn.host}: {tool} exited {result.exit}: {said or 'no MA answer'}"
    return Probe(target=target, ok=False, detail=detail, elapsed_ms=elapsed)
