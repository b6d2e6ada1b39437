"""The service managers a guest's shell reaches through its shims: pm2, systemctl, PowerShell / iisreset.

Each returns (exit code, output) like the real tool, and a failed start says why in both:
- `pm2 start process.json` (relative to the shell's cwd; an app already started is restarted, as pm2
  does with a process file), `pm2 start|restart|reload|stop|delete <name|all>`, `pm2 list|ls|status|jlist`,
  `pm2 save` (the running pm2 apps start at boot, the others no longer do), `pm2 startup`.
- `systemctl start|stop|restart|reload|try-restart|status|is-active|is-enabled|enable|disable <unit>`
  (`--now` with enable/disable), `systemctl daemon-reload`; status and is-active exit 3 when not running.
- `powershell [-NoProfile] [-Command] "<statements; separated>"`: `Restart-WebItem|Start-WebItem|
  Stop-WebItem 'IIS:\\Sites\\<site>'`, `Start-Website|Stop-Website [-Name] <site>`, `Get-WebItemState`,
  `iisreset [/start|/stop|/restart]`, `Restart-Service W3SVC`, `Import-Module WebAdministration`.
"""

import json
import os
import re
import shlex
from typing import TYPE_CHECKING

from sandbox.dataplane.apps.layout import SDK_CONFIG, GuestPathError, Unit, guest_path, write_unit

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
        return await _powershell(guests, server, _script(argv[1:]))
    if tool == "iisreset":
        return await _powershell(guests, server, shlex.join(["iisreset", *argv[1:]]))
    return 127, f"{argv[0]}: command not found\n"


# ---- pm2 -------------------------------------------------------------------------------------------
async def _pm2(guests: "Guests", server: "GuestServer", args: list[str], cwd: str) -> Result:
    verb = args[0] if args else "list"
    targets = [a for a in args[1:] if not a.startswith("-")]
    if verb in ("list", "ls", "status", "l"):
        return 0, _pm2_table(server)
    if verb == "jlist":
        apps = [
            {"name": r.unit.name, "pm2_env": {"status": r.state, "restart_time": r.restarts}} for r in _pm2_apps(server)
        ]
        return 0, json.dumps(apps) + "\n"
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
            await guests.stop_app(run)
            if verb == "delete":
                server.apps.pop(run.unit.name, None)
            lines.append(f"[PM2] [{run.unit.name}](0) ✓ {'stopped' if verb == 'stop' else 'deleted'}")
            continue
        action = "restartProcessId" if run.started_at is not None else "starting"
        await guests.start_app(server, run)
        if run.state == "online":
            lines.append(f"[PM2] Applying action {action} on app [{run.unit.name}]\n[PM2] [{run.unit.name}](0) ✓")
        else:
            code = 1
            lines.append(f"[PM2][ERROR] App [{run.unit.name}] errored: {run.reason}")
    return code, "\n".join(lines) + "\n" + (_pm2_table(server) if verb != "delete" else "")


def _pm2_apps(server: "GuestServer") -> list["AppRun"]:
    return server.units("pm2")


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
    rows = ["id  name                  status    restarts  reason"]
    for index, run in enumerate(_pm2_apps(server)):
        rows.append(f"{index:<3} {run.unit.name:<21} {run.state:<9} {run.restarts:<9} {run.reason or ''}".rstrip())
    return "\n".join(rows) + "\n"


# ---- systemctl -------------------------------------------------------------------------------------
async def _systemctl(guests: "Guests", server: "GuestServer", args: list[str]) -> Result:
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
            await guests.stop_app(run)
        elif verb in ("enable", "disable"):
            run.unit = run.unit.model_copy(update={"enabled": verb == "enable"})
            write_unit(server.disk, run.unit)
            if "--now" in options:
                await (guests.start_app(server, run) if verb == "enable" else guests.stop_app(run))
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


# ---- PowerShell / IIS ------------------------------------------------------------------------------
_FLAGS_WITH_VALUE = {"-executionpolicy", "-ep", "-windowstyle", "-file"}
_WEBITEM = re.compile(
    r"^(restart|start|stop|get)-webitem(?:state)?\s+(?:-pspath\s+)?['\"]?IIS:\\+Sites\\+(.+?)['\"]?$", re.I
)
_WEBSITE = re.compile(r"^(start|stop)-website\s+(?:-name\s+)?['\"]?(.+?)['\"]?$", re.I)


def _script(args: list[str]) -> str:
    words: list[str] = []
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        lowered = arg.lower()
        if lowered in ("-command", "-c"):
            return " ".join(words + args[index + 1 :])
        if lowered in _FLAGS_WITH_VALUE:
            skip = True
        elif not lowered.startswith("-") or words:
            words.append(arg)
    return " ".join(words)


async def _powershell(guests: "Guests", server: "GuestServer", script: str) -> Result:
    out: list[str] = []
    for statement in (s.strip() for s in script.split(";")):
        if not statement or re.match(r"^import-module\s+webadministration$", statement, re.I):
            continue
        verb, sites = _iis_statement(server, statement)
        if verb is None:
            name = statement.split()[0]
            return 1, f"{name} : The term '{name}' is not recognized as the name of a cmdlet, function, script file.\n"
        if not sites:
            return (
                1,
                f"{statement.split()[0]} : Cannot find path 'IIS:\\Sites\\{_site_name(statement)}'"
                " because it does not exist.\n",
            )
        for run in sites:
            if verb == "get":
                out.append("Started" if run.state == "online" else "Stopped")
            elif verb == "stop":
                await guests.stop_app(run)
            else:
                await guests.start_app(server, run)
                if run.state != "online":
                    return 1, "".join(line + "\n" for line in out) + (
                        f"{verb.title()}-WebItem : The site '{run.unit.name}' failed to start: {run.reason}\n"
                        "    + CategoryInfo          : InvalidOperation\n"
                    )
        if statement.lower().startswith("iisreset"):
            out.append("Internet services successfully " + ("stopped" if verb == "stop" else "restarted"))
    return 0, "".join(line + "\n" for line in out)


def _iis_statement(server: "GuestServer", statement: str) -> tuple[str | None, list["AppRun"]]:
    sites = server.units("iis")
    lowered = statement.lower()
    if lowered.startswith("iisreset"):
        flag = lowered.split()[1] if len(lowered.split()) > 1 else "/restart"
        return {"/stop": "stop", "/start": "start"}.get(flag, "restart"), sites
    if re.match(r"^restart-service\s+(-name\s+)?['\"]?w3svc['\"]?$", lowered):
        return "restart", sites
    match = _WEBITEM.match(statement) or _WEBSITE.match(statement)
    if match is None:
        return None, []
    name = match.group(2)
    return match.group(1).lower(), [run for run in sites if run.unit.name.lower() == name.lower()]


def _site_name(statement: str) -> str:
    match = _WEBITEM.match(statement) or _WEBSITE.match(statement)
    return match.group(2) if match else statement
