"""Where guest apps live on a server's disk folder, and how an app is installed onto one.

Guest paths map onto the disk folder by dropping the leading `/`: `/etc/qcloud/sdk.config` is
`<disk>/etc/qcloud/sdk.config`. Windows paths keep their drive as a folder named like the drive,
the way Windows' own OpenSSH SFTP server presents them: `C:\\qcloud\\sdk.config` is
`<disk>/C:/qcloud/sdk.config`, reached over SFTP as `/C:/qcloud/sdk.config` with a plain chroot.

Units (`/etc/sandbox/units/<name>.json`, on every platform: the sandbox's own boot manifest, not an
OS file) tell the server what to start at boot. They live on the disk, so an image carries them and
a server cloned from the image starts its app without a person (the guide's requirement).
"""

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

UNITS_DIR = "/etc/sandbox/units"
SDK_CONFIG = "/etc/qcloud/sdk.config"
WINDOWS_SDK_CONFIG = "C:\\qcloud\\sdk.config"
MINA_AUTH_CONFIG = "/etc/qcloud/mina_auth.json"
WEAPP_DIR = "/data/release/node-weapp-demo"
WEAPP_NAME = "weapp"  # the app name in the demo's process.json
IIS_SITE = "Default Web Site"
IIS_POOL = "DefaultAppPool"
# The real apps' ports: the node demo's config.js, tomcat's connector, IIS and Apache (mina_auth).
REAL_PORTS = {"pm2": 5757, "systemd": 8080, "iis": 80, "mina_auth": 80}

AppKind = Literal["mina_auth", "weapp"]  # the session service, or a business server's app
Manager = Literal["pm2", "systemd", "iis"]
_UNIT_NAME = re.compile(r"^[A-Za-z0-9_.@ -]{1,64}$")


class Unit(BaseModel):
    """One app a server can run: what it is, who manages it, where its config is, whether it starts at boot."""

    name: str = Field(description="pm2 app name, systemd unit (tomcat, mina_auth) or IIS site name")
    kind: AppKind
    manager: Manager
    config: str = Field(description="guest path of the config file the app reads when it (re)starts")
    cwd: str | None = Field(None, description="pm2: the folder holding process.json")
    enabled: bool = Field(True, description="start when the server boots")
    port: int | None = Field(None, ge=1, le=65535, description="the app's real HTTP port (None: its stack's)")

    @property
    def real_port(self) -> int:
        if self.port is not None:
            return self.port
        return REAL_PORTS["mina_auth" if self.kind == "mina_auth" else self.manager]


class GuestPathError(ValueError):
    pass


def guest_path(disk: Path, path: str, cwd: str = "/") -> Path:
    """The disk-folder file behind a guest path (relative paths resolve against `cwd`); never outside the disk."""
    text = path.replace("\\", "/")
    if re.match(r"^[A-Za-z]:", text):  # C:/qcloud/... -> /C:/qcloud/...
        text = "/" + text[0].upper() + text[1:]
    if not text.startswith("/"):
        base = cwd.replace("\\", "/")
        if re.match(r"^[A-Za-z]:", base):
            base = "/" + base[0].upper() + base[1:]
        text = f"{base.rstrip('/')}/{text}"
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", ".")]
    if ".." in parts:
        raise GuestPathError(f"{path}: `..` is not allowed here")
    return disk.joinpath(*parts) if parts else disk


def unit_file(disk: Path, name: str) -> Path:
    if not _UNIT_NAME.match(name):
        raise GuestPathError(f"bad unit name {name!r}")
    return guest_path(disk, f"{UNITS_DIR}/{name}.json")


def read_units(disk: Path) -> tuple[list[Unit], list[str]]:
    """Every unit on the disk, and a message per unit file that could not be read."""
    folder = guest_path(disk, UNITS_DIR)
    units: list[Unit] = []
    errors: list[str] = []
    if not folder.is_dir():
        return units, errors
    for file in sorted(folder.glob("*.json")):
        try:
            units.append(Unit.model_validate_json(file.read_bytes()))
        except (OSError, ValidationError, ValueError) as error:
            errors.append(f"{UNITS_DIR}/{file.name}: {_first_line(error)}")
    return units, errors


def write_unit(disk: Path, unit: Unit) -> None:
    write_file(unit_file(disk, unit.name), unit.model_dump_json(indent=2, exclude_none=True) + "\n")


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomically (temp file + rename), so a booting guest never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def sdk_config(auth_server_url: str, server_host: str, tunnel_key: str = "sandbox-tunnel-key") -> dict[str, object]:
    """The Wafer SDK's sdk.config (keys as the public SDKs define them)."""
    return {
        "serverHost": server_host,
        "authServerUrl": auth_server_url,
        "tunnelServerUrl": "https://tunnel.ws.qcloud.la",
        "tunnelSignatureKey": tunnel_key,
        "networkTimeout": 30000,
    }


def install_mina_auth(disk: Path, session_secret: str, ttl_seconds: int = 7200) -> Unit:
    """The session server's auth service, enabled at boot (systemd unit `mina_auth`)."""
    config = {"sessionSecret": session_secret, "sessionTtlSeconds": ttl_seconds}
    write_file(guest_path(disk, MINA_AUTH_CONFIG), json.dumps(config, indent=4) + "\n", mode=0o600)
    unit = Unit(name="mina_auth", kind="mina_auth", manager="systemd", config=MINA_AUTH_CONFIG)
    write_unit(disk, unit)
    return unit


def install_weapp(disk: Path, flavour: Literal["node", "java", "windows"], config: dict[str, object]) -> Unit:
    """A business server's app: the Node demo under pm2, the Java flavour (tomcat) or the IIS flavour."""
    text = json.dumps(config, indent=4) + "\n"
    if flavour == "node":
        process = {
            "name": WEAPP_NAME,
            "script": "app.js",
            "cwd": "./",
            "exec_mode": "fork",
            "watch": True,
            "env": {"NODE_ENV": "production"},
        }
        write_file(guest_path(disk, f"{WEAPP_DIR}/process.json"), json.dumps(process, indent=4) + "\n")
        write_file(guest_path(disk, f"{WEAPP_DIR}/app.js"), "// served by the sandbox's in-process guest\n")
        write_file(guest_path(disk, SDK_CONFIG), text)
        unit = Unit(name=WEAPP_NAME, kind="weapp", manager="pm2", config=SDK_CONFIG, cwd=WEAPP_DIR)
    elif flavour == "java":
        write_file(guest_path(disk, SDK_CONFIG), text)
        unit = Unit(name="tomcat", kind="weapp", manager="systemd", config=SDK_CONFIG)
    else:
        write_file(guest_path(disk, WINDOWS_SDK_CONFIG), text)
        unit = Unit(name=IIS_SITE, kind="weapp", manager="iis", config=WINDOWS_SDK_CONFIG)
    write_unit(disk, unit)
    return unit


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
