"""Pydantic models shared by tasks and flows: SSH access, runtime profiles, and a config change record.

They double as flow parameters (the Prefect UI's run form), so every field says what it is, and no
secret is ever a field: a flow run's parameters are stored by Prefect in the clear. Keys and passwords
come from a Prefect Secret block or a file on the worker, named here.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema


class HostKeyPolicy(StrEnum):
    strict = "strict"  # known_hosts lines must name the server's key (RejectPolicy)
    tofu = "tofu"  # trust on first use, recorded per instance id in Prefect; later connections verify strictly
    insecure = "insecure"  # accept any key: explicit opt-in only, warns on every connection


WorkerPath = Annotated[Path, AfterValidator(lambda path: path.expanduser())]  # `~` is the worker's home

_NOT_PARAMETERS = {
    "private_key": "key_secret_block (a Prefect Secret block) or key_file (a file on the worker)",
    "password": "password_secret_block (a Prefect Secret block) or password_file (a file on the worker)",
}
_NOT_SHOWN = "<not shown>"


class SshSettings(BaseModel):
    """How to log in to the servers over SSH. Secrets are named (a Secret block, a file), never given."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silently ignored one

    user: str | None = Field(None, description="login user; None: the runtime profile's (root, Administrator)")
    port: int = Field(22, ge=1, le=65535)
    key_file: WorkerPath | None = Field(None, description="the private key file (OpenSSH/PEM) on the worker")
    key_secret_block: str | None = Field(None, description="name of a Prefect Secret block holding the private key")
    password_file: WorkerPath | None = Field(
        None, description="a file on the worker holding the login password (Windows servers, which take no key pair)"
    )
    password_secret_block: str | None = Field(
        None, description="name of a Prefect Secret block holding the login password (Windows servers)"
    )
    host_key_policy: HostKeyPolicy = HostKeyPolicy.strict
    known_hosts: list[str] = Field(default_factory=list, description="known_hosts lines (`[ip]:port type base64`)")
    known_hosts_file: WorkerPath | None = Field(None, description="a known_hosts file, read in addition to the lines")
    tofu_variable: str = Field(
        "tcscale-known-hosts",
        pattern=r"^[a-z0-9_-]{1,200}$",
        description="tofu: each host key first seen is kept in the Prefect Variable `<this>-<instance id>`",
    )
    connect_timeout: float = Field(10.0, gt=0, description="TCP connect, SSH banner and auth timeout, seconds")
    command_timeout: float = Field(120.0, gt=0, description="default timeout of one remote command, seconds")
    io_timeout: float = Field(30.0, gt=0, description="timeout of one SFTP read or write, seconds")
    # Not parameters: always None, absent from the run form and from dumps; given, they are refused (below).
    private_key: SkipJsonSchema[None] = Field(None, exclude=True, repr=False)
    password: SkipJsonSchema[None] = Field(None, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _hide_what_is_not_a_field(cls, data: Any) -> Any:
        """A validation error quotes its input, and the enclosing flow parameters' error would quote a key given
        as `private_key` (or misspelt): such values are replaced before anything can fail on them."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields.keys() - _NOT_PARAMETERS.keys()
        return {name: value if name in fields else _NOT_SHOWN for name, value in data.items()}

    @field_validator(*_NOT_PARAMETERS, mode="before")
    @classmethod
    def _refuse_secrets(cls, value: Any, info: ValidationInfo) -> None:
        raise ValueError(
            f"`{info.field_name}` is not a parameter (a flow run's parameters are stored in the clear): "
            f"use {_NOT_PARAMETERS[info.field_name]}"
        )

    @model_validator(mode="after")
    def _one_source_each(self) -> SshSettings:
        for what, sources in (
            ("key", ("key_file", "key_secret_block")),
            ("password", ("password_file", "password_secret_block")),
        ):
            if all(getattr(self, source) for source in sources):
                raise ValueError(f"the {what} comes from one place: set {sources[0]} or {sources[1]}, not both")
        return self


class RuntimeProfile(BaseModel):
    """Where a business server keeps `sdk.config` and how its app is restarted (the guide's three stacks)."""

    name: str
    platform: str = Field("linux", pattern="^(linux|windows)$")
    config_path: str = Field(description="sdk.config as the OS names it (/etc/qcloud/..., C:\\qcloud\\...)")
    config_encoding: str | None = Field(None, description="the file's encoding when it has no BOM and is not UTF-8")
    restart_command: str = Field(description="run over SSH to make the app re-read its config")
    user: str = Field("root", description="login user when SshSettings.user is not set")
    port: int = Field(ge=1, le=65535, description="the app's real HTTP port (node demo 5757, tomcat 8080, IIS 80)")
    app_name: str = Field(description="the pm2 app (process.json `name`), systemd unit or IIS app pool")
    identity_command: str = Field(
        description="prints the app process's identity (pid, start): pm2 jlist / systemctl show / Get-Process w3wp"
    )

    @property
    def sftp_path(self) -> str:
        """The config path as SFTP names it: Windows' OpenSSH shows `C:\\qcloud\\x` as `/C:/qcloud/x`."""
        return sftp_path(self.config_path)


def sftp_path(path: str) -> str:
    text = path.replace("\\", "/")
    if re.match(r"^[A-Za-z]:", text):
        text = "/" + text[0].upper() + text[1:]
    return text


IIS_SITE = "Default Web Site"

IIS_POOL = "DefaultAppPool"
_POWERSHELL = "powershell -NoProfile -NonInteractive -Command"

RUNTIME_PROFILES: dict[str, RuntimeProfile] = {
    "node-pm2": RuntimeProfile(
        name="node-pm2",
        config_path="/etc/qcloud/sdk.config",
        restart_command="cd /data/release/node-weapp-demo && pm2 start process.json",
        port=5757,
        app_name="weapp",
        identity_command="pm2 jlist",
    ),
    "java-tomcat": RuntimeProfile(
        name="java-tomcat",
        config_path="/etc/qcloud/sdk.config",
        restart_command="systemctl restart tomcat",
        port=8080,
        app_name="tomcat",
        identity_command="systemctl show tomcat -p ActiveState,ActiveEnterTimestamp,MainPID",
    ),
    "dotnet-iis": RuntimeProfile(
        name="dotnet-iis",
        platform="windows",
        config_path="C:\\qcloud\\sdk.config",
        # A recycle: IIS starts a new worker process (w3wp), which reads sdk.config, at the next request.
        restart_command=f"{_POWERSHELL} \"Restart-WebAppPool -Name '{IIS_POOL}'\"",
        user="Administrator",
        port=80,
        app_name=IIS_POOL,
        identity_command=(
            f'{_POWERSHELL} "Get-Process -Name w3wp -ErrorAction SilentlyContinue'
            ' | Select-Object Id,StartTime | ConvertTo-Json -Compress"'
        ),
    ),
}


def runtime_profile(name: str, **overrides: object) -> RuntimeProfile:
    """A built-in profile by name, with any field overridden (e.g. `config_path=...`)."""
    try:
        base = RUNTIME_PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown runtime profile {name!r}; known: {', '.join(RUNTIME_PROFILES)}") from None
    return base.model_validate({**base.model_dump(), **overrides})


class Change(BaseModel):
    """One rewrite of one config key on one server: enough to report it and to undo it."""

    host: str
    port: int = 22
    instance_id: str | None = None
    path: str = Field(description="the file as SFTP names it")
    key: str
    before: str = Field(description="the key's value before")
    after: str = Field(description="the key's value after")
    changed: bool = Field(description="False: the value was already right, nothing was written")
    applied: bool = Field(False, description="False for a dry run's plan")
    backup_path: str | None = None
    before_sha256: str = Field(description="of the whole file before")
    after_sha256: str = Field(description="of the whole file after (equal to before when unchanged)")
