"""`powershell [-NoProfile] [-NonInteractive] -Command "<statements; separated>"` on a Windows guest, and iisreset.

The statements an operator (or tcscale) runs on a real IIS server, answered like PowerShell 5.1:
- app pool: `Restart-WebAppPool|Start-WebAppPool|Stop-WebAppPool [-Name] 'DefaultAppPool'`,
  `Get-WebAppPoolState [-Name] 'DefaultAppPool'` (a recycle ends the worker process; IIS starts a new
  one at the next request);
- site: `Restart-WebItem|Start-WebItem|Stop-WebItem 'IIS:\\Sites\\<site>'`, `Start-Website|Stop-Website
  [-Name] <site>`, `Get-WebItemState`, `iisreset [/start|/stop|/restart]`, `Restart-Service W3SVC`,
  `Import-Module WebAdministration`;
- the worker processes: `Get-Process -Name w3wp [-ErrorAction SilentlyContinue] | Select-Object Id,StartTime
  | ConvertTo-Json -Compress` -> `{"Id":4242,"StartTime":"\\/Date(1764600000000)\\/"}`, an array for several,
  nothing when none runs;
- a URL from the server itself: `(Invoke-WebRequest -UseBasicParsing [-Method POST] [-ContentType '…']
  [-Body '…'] -Uri '…' [-TimeoutSec N]).Content` prints the body; an error (unreachable, timeout, a status
  >= 400) prints PowerShell's message and exits 1.
"""

import json
import re
from typing import TYPE_CHECKING

from sandbox.dataplane.apps.layout import IIS_POOL
from sandbox.dataplane.net import http_probe

if TYPE_CHECKING:
    from sandbox.dataplane.guests import AppRun, Guests, GuestServer

Result = tuple[int, str]
_FLAGS_WITH_VALUE = {"-executionpolicy", "-ep", "-windowstyle", "-file"}
_WEBITEM = re.compile(
    r"^(restart|start|stop|get)-webitem(?:state)?\s+(?:-pspath\s+)?['\"]?IIS:\\+Sites\\+(.+?)['\"]?$", re.I
)
_WEBSITE = re.compile(r"^(start|stop)-website\s+(?:-name\s+)?['\"]?(.+?)['\"]?$", re.I)
_APPPOOL = re.compile(r"^(restart|start|stop|get)-webapppool(?:state)?\s+(?:-name\s+)?['\"]?(.+?)['\"]?$", re.I)
_W3WP = re.compile(
    r"^get-process\s+(?:-name\s+)?['\"]?w3wp['\"]?(?:\s+-erroraction\s+\w+)?"
    r"(?:\s*\|\s*select-object\s+(?:-property\s+)?id\s*,\s*starttime)?"
    r"(?:\s*\|\s*convertto-json(?:\s+-compress)?)?$",
    re.I,
)
_IWR = re.compile(r"^\(\s*(?:invoke-webrequest|iwr)\s+(.*)\)\.content$", re.I | re.S)


def script_of(args: list[str]) -> str:
    """The script of `powershell <flags> -Command <script...>` (or of bare arguments)."""
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


def statements(script: str) -> list[str]:
    """Split on `;` outside quotes and parentheses."""
    out, current, quote, depth = [], [], "", 0
    for char in script:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == ";" and depth == 0:
            out.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    out.append("".join(current).strip())
    return [s for s in out if s]


def is_web_request(script: str) -> bool:
    return any(_IWR.match(statement) for statement in statements(script))


def _words(text: str) -> list[str]:
    """PowerShell argument words: 'single' ('' escapes ') and "double" quoted strings, or bare words."""
    pattern = re.compile(r"'((?:[^']|'')*)'|\"((?:[^\"`]|`.)*)\"|(\S+)")
    words = []
    for single, double, bare in pattern.findall(text):
        words.append(single.replace("''", "'") if single or (not double and not bare) else double or bare)
    return words


async def powershell(guests: "Guests", server: "GuestServer", script: str) -> Result:
    out: list[str] = []
    for statement in statements(script):
        if re.match(r"^import-module\s+webadministration$", statement, re.I):
            continue
        if (match := _IWR.match(statement)) is not None:
            code, text = await _web_request(server, guests, match.group(1))
            if code:
                return code, "".join(out) + text
            out.append(text)
            continue
        if _W3WP.match(statement):
            out.append(_w3wp_json(server, json_out="convertto-json" in statement.lower()))
            continue
        if (match := _APPPOOL.match(statement)) is not None:
            code, text = await _app_pool(guests, server, match.group(1).lower(), match.group(2))
            if code:
                return code, "".join(out) + text
            out.append(text)
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
                out.append("Started\n" if run.state == "online" else "Stopped\n")
            elif verb == "stop":
                await guests.stop_app(run, server)
            else:
                await guests.start_app(server, run)
                if run.state != "online":
                    return 1, "".join(out) + (
                        f"{verb.title()}-WebItem : The site '{run.unit.name}' failed to start: {run.reason}\n"
                        "    + CategoryInfo          : InvalidOperation\n"
                    )
        if statement.lower().startswith("iisreset"):
            out.append("Internet services successfully " + ("stopped\n" if verb == "stop" else "restarted\n"))
    return 0, "".join(out)


async def _app_pool(guests: "Guests", server: "GuestServer", verb: str, name: str) -> Result:
    sites = server.units("iis")
    if name.lower() != IIS_POOL.lower() or not sites:
        cmdlet = f"{verb.title()}-WebAppPool"
        return 1, f"{cmdlet} : Cannot find path 'IIS:\\AppPools\\{name}' because it does not exist.\n"
    for run in sites:
        if verb == "get":
            return 0, "Started\n" if run.state == "online" else "Stopped\n"
        if verb == "stop":
            await guests.stop_app(run, server)
        elif verb == "start" and run.state == "online":
            where = f"/system.applicationHost/applicationPools/{name}"
            return 1, f"Start-WebAppPool : The object '{where}' is already started.\n"
        else:
            await guests.recycle(server, run)
    return 0, ""


def _w3wp_json(server: "GuestServer", json_out: bool) -> str:
    workers = [r for r in server.units("iis") if r.app is not None and r.pid is not None and r.started_at is not None]
    rows = [{"Id": r.pid, "StartTime": f"\\/Date({int((r.started_at or 0) * 1000)})\\/"} for r in workers]
    if not rows:
        return ""
    if not json_out:
        return "".join(f"{row['Id']}\n" for row in rows)
    text = json.dumps(rows[0] if len(rows) == 1 else rows, separators=(",", ":"))
    return text.replace("\\\\/", "\\/") + "\n"  # ConvertTo-Json writes \/Date(ms)\/


async def _web_request(server: "GuestServer", guests: "Guests", text: str) -> Result:
    words = _words(text)
    params: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word.lower() == "-usebasicparsing":
            index += 1
            continue
        if word.startswith("-") and index + 1 < len(words):
            params[word.lower()] = words[index + 1]
            index += 2
            continue
        params.setdefault("-uri", word)
        index += 1
    url = params.get("-uri", "")
    method = params.get("-method", "GET").upper()
    body = params.get("-body")
    headers = {"Content-Type": params["-contenttype"]} if "-contenttype" in params else {}
    try:
        timeout = float(params.get("-timeoutsec", "100"))
        answer = await http_probe(
            server.private_ip,
            url,
            method,
            body=body.encode() if body is not None else None,
            headers=headers,
            timeout=timeout,
            connect_port=guests.ports.listen,
        )
    except TimeoutError:
        return 1, "Invoke-WebRequest : The operation has timed out.\n"
    except ConnectionRefusedError:
        return 1, "Invoke-WebRequest : Unable to connect to the remote server\n"
    except OSError:
        closed = "The underlying connection was closed: An unexpected error occurred on a receive."
        return 1, f"Invoke-WebRequest : {closed}\n"
    except ValueError:
        return 1, f"Invoke-WebRequest : Invalid URI: The format of the URI could not be determined: {url}\n"
    if answer.status >= 400:
        return 1, f"Invoke-WebRequest : The remote server returned an error: ({answer.status}).\n"
    return 0, answer.text() + "\n"


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
