"""The service managers a guest's shell reaches through its shims: pm2, systemctl, PowerShell / iisreset.

Each returns (exit code, output) like the real tool, and a failed start says why in both:
- `pm2 start process.json` (relative to the shell's cwd; an app already started is restarted, as pm2
  does with a process file: new pid, new pm_uptime, restart_time + 1; exit 0 even when the app then
  crashes, as pm2's), `pm2 start|restart|reload|stop|delete <name|all>`, `pm2 list|ls|status`,
  `pm2 jlist` (JSON array: name, pid, pm_id, pm2_env.status / pm_uptime (ms since epoch) / restart_time),
  `pm2 save` (the running pm2 apps start at boot, the others no longer do), `pm2 startup`.
- `systemctl start|stop|restart|reload|try-restart|status|is-active|is-enabled|enable|disable <unit>`
  (`--now` with enable/disable), `systemctl daemon-reload`; status and is-active exit 3 when not running;
  `systemctl show <unit> -p ActiveState,ActiveEnterTimestamp,MainPID` (`Name=value` lines).
- `powershell` / `iisreset`: see apps/powershell.py.
"""

import json
import os
import shlex
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sandbox.dataplane.apps.layout import SDK_CONFIG, GuestPathError, Unit, guest_path, write_unit
from sandbox.dataplane.apps.powershell import is_web_request, powershell, script_of

if TYPE_CHECKING:
    from sandbox.dataplane.guests import AppRun, Guests, GuestServer

Result = tuple[int, str]


async def run_command(guests: "Guests", server: "GuestServer", argv: list[str], cwd: str) -> Result:
    if not argv:
        return 1, "no command\n"
    tool = os.path.basename(argv[0].replace("\\", "/")).lower().removesuffix(".exe")
    if tool == "pm2":
        return await _pm2(guests, server, argv[1:], cwd)
    if tool == "systemctl":
        return await _systemctl(guests, server, argv[1:])
    if tool in ("powershell", "pwsh"):
        return await powershell(guests, server, script_of(argv[1:]))
    if tool == "iisreset":
        return await powershell(guests, server, shlex.join(["iisreset", *argv[1:]]))
    return 127, f"{argv[0]}: command not found\n"


def needs_lock(argv: list[str]) -> bool:
    """A command that only fetches a URL runs outside the server's lock (the URL may be the server itself)."""
    tool = os.path.basename(argv[0].replace("\\", "/")).lower().removesuffix(".exe") if argv else ""
    return not (tool in ("powershell", "pwsh") and is_web_request(script_of(argv[1:])))


# ---- pm2 -------------------------------------------------------------------------------------------
async def _pm2(guests: "Guests", server: "GuestServer", args: list[str], cwd: str) -> Result:
    verb = args[0] if args else "list"
    targets = [a for a in args[1:] if not a.startswith("-")]
    if verb in ("list", "ls", "status", "l"):
        return 0, _pm2_table(server)
    if verb == "jlist":
        return 0, json.dumps([_pm2_json(index, run) for index, run in enumerate(_pm2_apps(server))]) + "\n"
    if verb == "startup":
        return 0, "[PM2] Init System found: systemd\n[PM2] [v] Command successfully executed.\n"
    if verb == "save":
        running = {r.unit.name for r in _pm2_apps(server) if r.state != "stopped"}
        for run in _pm2_apps(server):
            run.unit = run.unit.model_copy(update={"enabled": run.unit.name in running})
            write_unit(server.disk, run.unit)
        return 0, "[PM2] Saving current process list...\n[PM2] Successfully saved\n"
    if verb not in ("start", "restart", "reload", "stop", "delete") or not targets:
        return 1, f"[PM2][ERROR] usage: pm2 {verb} <process.json|name|all>\n"
    guests.reload_units(server)  # pm2 knows the apps saved on the disk (pm2 save / resurrect)
    if targets[0].endswith((".json", ".config.js")):
        runs, error = _from_process_file(guests, server, targets[0], cwd)
        if error:
            return 1, error
    else:
        runs = _pm2_apps(server) if targets[0] == "all" else [r for r in _pm2_apps(server) if r.unit.name in targets]
        if not runs:
            return 1, f"[PM2][ERROR] Process or Namespace {' '.join(targets)} not found\n"
    lines, code = [], 0
    for run in runs:
        if verb in ("stop", "delete"):
            await guests.stop_app(run, server)
            if verb == "delete":
                server.apps.pop(run.unit.name, None)
            lines.append(f"[PM2] [{run.unit.name}](0) ✓ {'stopped' if verb == 'stop' else 'deleted'}")
            continue
        action = "restartProcessId" if run.started_at is not None else "starting"
        await guests.start_app(server, run)  # launched: a crash right after is pm2's business, not the command's
        lines.append(f"[PM2] Applying action {action} on app [{run.unit.name}](ids: [0])\n[PM2] [{run.unit.name}](0) ✓")
    return code, "\n".join(lines) + "\n" + (_pm2_table(server) if verb != "delete" else "")


def _pm2_apps(server: "GuestServer") -> list["AppRun"]:
    return server.units("pm2")


def _pm2_json(index: int, run: "AppRun") -> dict[str, object]:
    pid = run.pid if run.pid is not None and run.state == "online" else 0
    uptime = int(run.started_at * 1000) if run.started_at is not None else 0
    env = {
        "name": run.unit.name,
        "status": run.state,
        "pm_uptime": uptime,
        "restart_time": run.restarts,
        "unstable_restarts": 0,
        "pm_cwd": run.unit.cwd,
        "exec_mode": "fork_mode",
        "watch": True,
    }
    return {"pid": pid, "name": run.unit.name, "pm_id": index, "pm2_env": env, "monit": {"memory": 0, "cpu": 0}}


def _from_process_file(guests: "Guests", server: "GuestServer", name: str, cwd: str) -> tuple[list["AppRun"], str]:
    try:
        path = guest_path(server.disk, name, cwd)
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return [], f"[PM2][ERROR] File {name} not found\n"
    except (OSError, GuestPathError) as error:
        return [], f"[PM2][ERROR] File {name} cannot be read: {error}\n"
    except ValueError as error:
        return [], f"[PM2][ERROR] File {name} malformated: {error}\n"
    declared = data.get("apps", data) if isinstance(data, dict) else data
    declared = [declared] if isinstance(declared, dict) else declared
    if not isinstance(declared, list) or not all(
        isinstance(a, dict) and isinstance(a.get("name"), str) for a in declared
    ):
        return [], f"[PM2][ERROR] File {name}: every app needs a name\n"
    folder = str(path.parent.relative_to(server.disk))
    runs = []
    for app in declared:
        existing = server.apps.get(app["name"])
        if existing is not None and existing.unit.manager == "pm2":
            runs.append(existing)
            continue
        unit = Unit(name=app["name"], kind="weapp", manager="pm2", config=SDK_CONFIG, cwd=f"/{folder}", enabled=False)
        runs.append(guests.add_unit(server, unit))
    return runs, ""


def _pm2_table(server: "GuestServer") -> str:
    rows = ["id  name                  pid     status    restarts  reason"]
    for index, run in enumerate(_pm2_apps(server)):
        pid = str(run.pid or 0)
        line = f"{index:<3} {run.unit.name:<21} {pid:<7} {run.state:<9} {run.restarts:<9} {run.reason or ''}"
        rows.append(line.rstrip())
    return "\n".join(rows) + "\n"


# ---- systemctl -------------------------------------------------------------------------------------
async def _systemctl(guests: "Guests", server: "GuestServer", args: list[str]) -> Result:
    args, properties = _properties(args)
    options = {a for a in args if a.startswith("-")}
    words = [a for a in args if not a.startswith("-")]
    verb = words[0] if words else "list-units"
    if verb == "daemon-reload":
        guests.reload_units(server)
        return 0, ""
    if verb == "list-units":
        return 0, "".join(f"{r.unit.name}.service {r.state}\n" for r in server.units("systemd"))
    names = [w.removesuffix(".service") for w in words[1:]]
    if not names:
        return 1, f"Too few arguments for `systemctl {verb}`.\n"
    lines, code = [], 0
    for name in names:
        run = server.apps.get(name)
        if run is None or run.unit.manager != "systemd":
            return 5 if verb != "status" else 4, f"Unit {name}.service could not be found.\n"
        if verb in ("start", "restart", "reload", "try-restart", "reload-or-restart"):
            if verb == "try-restart" and run.state != "online":
                continue
            await guests.start_app(server, run)
            if run.state != "online":
                code = 1
                lines.append(
                    f"Job for {name}.service failed because the control process exited with error code.\n"
                    f'See "systemctl status {name}.service" for details.\n{name}.service: {run.reason}'
                )
        elif verb == "stop":
            await guests.stop_app(run, server)
        elif verb == "show":
            lines.extend(_show(run, properties))
        elif verb in ("enable", "disable"):
            run.unit = run.unit.model_copy(update={"enabled": verb == "enable"})
            write_unit(server.disk, run.unit)
            if "--now" in options:
                await (guests.start_app(server, run) if verb == "enable" else guests.stop_app(run, server))
                code = 1 if verb == "enable" and run.state != "online" else code
            lines.append(f"{'Created symlink' if verb == 'enable' else 'Removed'} {name}.service.")
        elif verb == "is-active":
            lines.append({"online": "active", "errored": "failed"}.get(run.state, "inactive"))
            code = code if run.state == "online" else 3
        elif verb == "is-enabled":
            lines.append("enabled" if run.unit.enabled else "disabled")
            code = code if run.unit.enabled else 1
        elif verb == "status":
            lines.append(_systemd_status(run))
            code = code if run.state == "online" else 3
        else:
            return 1, f'Unknown command verb "{verb}".\n'
    return code, "".join(line + "\n" for line in lines)


def _enabled(run: "AppRun") -> str:
    return "enabled" if run.unit.enabled else "disabled"


def _systemd_status(run: "AppRun") -> str:
    active = {
        "online": "active (running)",
        "errored": "failed (Result: exit-code)",
    }.get(run.state, "inactive (dead)")
    text = (
        f"● {run.unit.name}.service - sandbox guest {run.unit.kind}\n"
        f"   Loaded: loaded (/etc/sandbox/units/{run.unit.name}.json; {_enabled(run)})\n"
        f"   Active: {active}"
    )
    return text + (f"\n   Reason: {run.reason}" if run.reason else "")


def _properties(args: list[str]) -> tuple[list[str], list[str]]:
    """Split `-p A,B` / `--property=A,B` (repeatable) out of systemctl's arguments."""
    rest: list[str] = []
    names: list[str] = []
    iterator = iter(args)
    for arg in iterator:
        if arg in ("-p", "--property"):
            names += next(iterator, "").split(",")
        elif arg.startswith("--property="):
            names += arg.split("=", 1)[1].split(",")
        elif arg.startswith("-p") and len(arg) > 2:
            names += arg[2:].split(",")
        else:
            rest.append(arg)
    return rest, [n for n in names if n]


def _show(run: "AppRun", names: list[str]) -> list[str]:
    active = {"online": "active", "errored": "failed"}.get(run.state, "inactive")
    since = run.active_since if active == "active" else None
    values = {
        "Id": f"{run.unit.name}.service",
        "ActiveState": active,
        "SubState": {"active": "running", "failed": "failed"}.get(active, "dead"),
        "ActiveEnterTimestamp": _systemd_time(since),
        "ExecMainStartTimestamp": _systemd_time(run.started_at if run.pid else None),
        "MainPID": str(run.pid if run.pid and active == "active" else 0),
        "UnitFileState": _enabled(run),
        "NRestarts": str(run.restarts),
    }
    return [f"{name}={values.get(name, '')}" for name in (names or list(values))]


def _systemd_time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%a %Y-%m-%d %H:%M:%S UTC")
