"""SSH to the servers (fabric 3 / paramiko): connect with verified host keys, rewrite sdk.config, restart apps.

Facts this follows: paramiko never sets TCP_NODELAY (a loopback handshake takes
~93 ms instead of ~5 ms), so the socket is opened here and passed as `sock`; fabric accepts any
host key by default, so the policy is set explicitly; Prefect's task timeouts do not interrupt a
blocking call, so every connect, SFTP operation and command has its own timeout. Keys and passwords are
never logged nor put in an error message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import NamedTuple

import paramiko
from fabric import Config, Connection

from tasks import sdkconfig
from tasks.models import Change, RuntimeProfile, SshSettings, sftp_path
from tasks.ssh_keys import (
    apply_host_key_policy,
    has_key,
    known_host_name,
    resolve_password,
    resolve_private_key,
)

log = logging.getLogger("tcscale.remote")

FABRIC_OVERRIDES = {"load_ssh_configs": False, "run": {"hide": True, "warn": True, "in_stream": False}}


IDLE_CHECK_SECONDS = 2.0


def _fabric_config() -> Config:
    """A Config of its own for each connection: a Connection merges into its config as it is made, and one shared
    by threads that connect at once lost its keys mid-merge ("No attribute or config key found for 'gateway'")."""
    return Config(overrides=FABRIC_OVERRIDES, lazy=True)  # lazy: never /etc/fabric.yml or ~/.fabric.*


class RemoteError(Exception):
    """An SSH/SFTP failure on one host. The message names the host, never a key."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.message = message
        super().__init__(f"{host}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (RemoteError, (self.host, self.message))


class EditedSinceRun(RemoteError):
    """A config key no longer holds the value tcscale wrote: someone set it since; their value is not ours to undo."""

    def __init__(self, host: str, path: str, key: str, value: str, written: list[str], backup_path: str) -> None:
        self.path, self.key, self.value, self.written, self.backup_path = path, key, value, written, backup_path
        wrote = " or ".join(repr(w) for w in written) or "(no record of it)"
        super().__init__(
            host,
            f"{path}: {key} is {value!r}, not the value tcscale wrote ({wrote}): changed since tcscale rewrote it; "
            f"not restoring over it (the file before tcscale: {backup_path})",
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (EditedSinceRun, (self.host, self.path, self.key, self.value, self.written, self.backup_path))


class RemoteCommandFailed(RemoteError):
    def __init__(self, host: str, command: str, exit_code: int | None, stdout: str, stderr: str) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        output = (stderr.strip() or stdout.strip())[-500:]
        status = {None: "timed out", -1: "lost its SSH connection before it finished"}.get(
            exit_code, f"exited {exit_code}"
        )
        super().__init__(host, f"`{command}` {status}" + (f": {output}" if output else ""))

    def __reduce__(self) -> tuple[object, ...]:
        return (RemoteCommandFailed, (self.host, self.command, self.exit_code, self.stdout, self.stderr))


def connection_trouble(error: BaseException) -> bool:
    """Would a new SSH connection help? Yes for a failed connect/SFTP or a lost channel; not for a command that
    answered with an exit code (the app did fail), nor for a refused config file."""
    if isinstance(error, RemoteCommandFailed):
        return error.exit_code in (None, -1)  # timed out, or the connection dropped under the command
    refused = ("authentication failed", "host key", "changed since")  # a retry would be refused the same way
    return isinstance(error, RemoteError) and not any(reason in error.message for reason in refused)


class CommandResult(NamedTuple):
    exit: int
    stdout: str
    stderr: str


# --- connections -----------------------------------------------------------------------------------------


def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(
    host: str,
    settings: SshSettings,
    profile: RuntimeProfile | None = None,
    instance_id: str | None = None,
    pkey: paramiko.PKey | None = None,
) -> Connection:
    """An open fabric Connection to `host`, its host key checked by `settings.host_key_policy`."""
    user = settings.user or (profile.user if profile else "root")
    where = known_host_name(host, settings.port)
    # A key when one is given (paramiko tries it first, then the password if both are set); else the password.
    if pkey is None and has_key(settings):
        pkey = resolve_private_key(settings)
    password = resolve_password(settings)
    if pkey is None and password is None:
        raise ValueError(
            "no SSH credentials: set key_secret_block or key_file, "
            "or password_secret_block or password_file (Windows servers)"
        )
    timeout = settings.connect_timeout
    try:
        sock = _open_socket(host, settings.port, timeout)
    except OSError as exc:
        raise RemoteError(where, f"cannot connect: {exc.strerror or exc}") from None
    conn = Connection(
        host,
        user=user,
        port=settings.port,
        config=_fabric_config(),
        connect_kwargs={
            "sock": sock,
            "pkey": pkey,
            "password": password,
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": timeout,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
            "channel_timeout": timeout,
        },
    )
    try:
        apply_host_key_policy(conn, settings, instance_id)
        conn.open()
    except paramiko.BadHostKeyException as exc:
        _abandon(conn, sock)
        raise RemoteError(
            where, f"host key mismatch: the server offered {exc.key.get_name()} {exc.key.fingerprint}"
        ) from None
    except paramiko.AuthenticationException:
        _abandon(conn, sock)
        raise RemoteError(where, f"authentication failed for user {user!r}") from None
    except (paramiko.SSHException, OSError, EOFError, ValueError) as exc:
        _abandon(conn, sock)
        reason = str(exc) or type(exc).__name__
        if "not found in known_hosts" in reason:
            reason = f"host key unknown (policy {settings.host_key_policy.value}): no known_hosts line for {where}"
        raise RemoteError(where, reason) from None
    # paramiko's transport thread wakes every 0.1 s to see whether it should stop (its socket's timeout): a run's pool
    # of 100 idle connections woke 1,000 times a second, each wake-up taking the GIL from the working threads.
    # Closing does not wait for the thread (`Transport.stop_thread` returns once its packetizer is closed); the thread
    # ends within this interval.
    sock.settimeout(IDLE_CHECK_SECONDS)
    return conn


def _abandon(conn: Connection, sock: socket.socket) -> None:
    """Close a connection that failed to open: the client first (it stops the transport thread), then the socket."""
    conn.client.close()
    sock.close()


class ConnectionPool:
    """One SSH connection per server for a whole run: opened by the first step that needs it, reused by every
    later step (preflight, reach, repoint, verify, undo), closed when the run ends. A connection that fails under a
    step is dropped, so that step's retry opens a new one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}
        self._opening: dict[str, threading.Lock] = {}  # one connect per server, however many steps ask at once

    def borrow(self, key: str, open_connection: Callable[[], Connection]) -> Connection:
        with self._lock:
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            with self._lock:
                conn = self._connections.get(key)
            if conn is not None and conn.is_connected:
                return conn
            conn = open_connection()
            with self._lock:
                self._connections[key] = conn
            return conn

    def drop(self, key: str, conn: Connection) -> None:
        with self._lock:
            if self._connections.get(key) is conn:
                del self._connections[key]
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            with contextlib.suppress(Exception):
                conn.close()

    def __len__(self) -> int:
        return len(self._connections)


# The run's pool, seen by its tasks: Prefect runs each task in a copy of the flow's context.
_POOL: ContextVar[ConnectionPool | None] = ContextVar("tcscale_ssh_pool", default=None)


@contextlib.contextmanager
def pooled() -> Iterator[ConnectionPool]:
    """Within this block, `session` reuses one connection per server (and settings) instead of one per step."""
    pool = ConnectionPool()
    token = _POOL.set(pool)
    try:
        yield pool
    finally:
        _POOL.reset(token)
        pool.close()


@contextlib.contextmanager
def session(
    host: str,
    settings: SshSettings,
    profile: RuntimeProfile | None = None,
    instance_id: str | None = None,
    pkey: paramiko.PKey | None = None,
) -> Iterator[Connection]:
    """A connection to `host`: the run's pooled one when a pool is open (`pooled`), else one of its own."""
    pool = _POOL.get()
    if pool is None or pkey is not None:
        conn = connect(host, settings, profile, instance_id, pkey)
        try:
            yield conn
        finally:
            conn.close()
        return
    user = settings.user or (profile.user if profile else "root")
    key = f"{user}@{host}:{instance_id}:{settings.model_dump_json()}"  # other settings, other connection
    conn = pool.borrow(key, lambda: connect(host, settings, profile, instance_id))
    try:
        yield conn
    except BaseException as error:
        if not conn.is_connected or connection_trouble(error):
            pool.drop(key, conn)
        raise


def _where(conn: Connection) -> str:
    return known_host_name(conn.host, conn.port)


def _sftp(conn: Connection, timeout: float) -> paramiko.SFTPClient:
    sftp = conn.sftp()
    sftp.get_channel().settimeout(timeout)
    return sftp


# --- commands --------------------------------------------------------------------------------------------


def run(conn: Connection, command: str, timeout: float = 120.0, check: bool = True) -> CommandResult:
    """Run `command`; return (exit, stdout, stderr). With `check`, a non-zero exit or a timeout raises.

    A channel of the connection's transport, read once the command has exited: invoke's runner (fabric's
    `Connection.run`) starts threads and polls each stream every 10 ms, ~10x the CPU of this for the short commands
    run here (a restart, `pm2 jlist`), which a repoint of 100 servers runs a thousand times."""
    try:
        transport = conn.client.get_transport() if conn.is_connected else None
        if transport is None:
            raise paramiko.SSHException("not connected")
        channel = transport.open_session(timeout=timeout)
    except Exception as exc:
        raise RemoteError(_where(conn), f"`{command}` could not run: {exc}") from None
    with channel:
        deadline = time.monotonic() + timeout
        try:
            channel.exec_command(command)
            channel.shutdown_write()  # no input: as `in_stream: False`
            exited = channel.status_event.wait(timeout)
            channel.settimeout(max(0.1, deadline - time.monotonic()))
            stdout = _drain(channel.recv) if exited else b""
            stderr = _drain(channel.recv_stderr) if exited else b""
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteError(_where(conn), f"`{command}` could not run: {exc}") from None
        if not exited:
            raise RemoteCommandFailed(_where(conn), command, None, "", f"no answer within {timeout:g}s")
        code = channel.exit_status  # -1: the channel closed without an exit status (the connection dropped)
    outcome = CommandResult(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
    if check and outcome.exit != 0:
        raise RemoteCommandFailed(_where(conn), command, outcome.exit, outcome.stdout, outcome.stderr)
    return outcome


def _drain(receive: Callable[[int], bytes]) -> bytes:
    chunks = []
    while chunk := receive(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def restart(conn: Connection, profile: RuntimeProfile, timeout: float = 120.0) -> CommandResult:
    """Restart the app the way its runtime profile says (pm2, systemctl, IIS)."""
    return run(conn, profile.restart_command, timeout=timeout)


# --- files -----------------------------------------------------------------------------------------------


def read_file(conn: Connection, path: str, timeout: float = 30.0) -> bytes:
    try:
        with _sftp(conn, timeout).open(sftp_path(path), "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise RemoteError(_where(conn), f"{path}: no such file") from None
    except (OSError, paramiko.SSHException) as exc:
        raise RemoteError(_where(conn), f"cannot read {path}: {exc}") from None


def _write_new(sftp: paramiko.SFTPClient, path: str, data: bytes, mode: int | None) -> None:
    with sftp.open(path, "wbx") as file:  # x: exclusive, never clobber an existing file
        file.write(data)
    if mode is not None:
        sftp.chmod(path, stat.S_IMODE(mode))


def _unique(path: str, suffix: str, tag: str = "") -> str:
    """`<path>.tcscale-[<tag>-]<UTC time>-<random>.<suffix>`: sorts by time within a tag."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{path}.tcscale-{tag + '-' if tag else ''}{stamp}-{uuid.uuid4().hex[:8]}.{suffix}"


_BACKUP = re.compile(r"^(?:(?P<tag>[a-z0-9-]+)-)?\d{8}T\d{6}-[0-9a-f]{8}\.bak$")


def backups(conn: Connection, path: str, tag: str, timeout: float = 30.0) -> list[str]:
    """The backups `rewrite_sdk_config(..., backup_tag=tag)` left of `path`, oldest first.

    The tag must match exactly: the backups of run `abc-2` are not run `abc`'s.
    """
    remote_path = sftp_path(path)
    folder, _, name = remote_path.rpartition("/")
    prefix = f"{name}.tcscale-"
    try:
        entries = _sftp(conn, timeout).listdir(folder or "/")
    except (OSError, paramiko.SSHException) as exc:
        raise RemoteError(_where(conn), f"cannot list {folder}: {exc}") from None
    ours = []
    for entry in entries:
        found = _BACKUP.match(entry[len(prefix) :]) if entry.startswith(prefix) else None
        if found and (found.group("tag") or "") == tag:
            ours.append(entry)
    return [f"{folder}/{e}" for e in sorted(ours)]


def _written_path(backup_path: str) -> str:
    """Beside each backup, the value its rewrite wrote: what an undo may restore over, and nothing else."""
    return backup_path.removesuffix(".bak") + ".written"


def written_values(conn: Connection, backup_paths: list[str], key: str, timeout: float = 30.0) -> list[str]:
    """The values of `key` the rewrites that left these backups wrote (a backup without its record adds none)."""
    values = []
    for backup in backup_paths:
        try:
            with _sftp(conn, timeout).open(_written_path(backup), "rb") as file:
                record = json.loads(file.read())
        except FileNotFoundError:
            continue
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise RemoteError(_where(conn), f"cannot read {_written_path(backup)}: {exc}") from None
        if record.get("key") == key and isinstance(record.get("value"), str) and record["value"] not in values:
            values.append(record["value"])
    return values


def _replace(conn: Connection, path: str, data: bytes, mode: int | None, timeout: float) -> None:
    """Atomically make `path` hold `data`: a temp file beside it, then posix_rename over it, then read back."""
    sftp = _sftp(conn, timeout)
    temp = _unique(path, "tmp")
    try:
        _write_new(sftp, temp, data, mode)
        sftp.posix_rename(temp, path)  # plain SFTP rename refuses to overwrite
    except (OSError, paramiko.SSHException) as exc:
        with contextlib.suppress(Exception):
            sftp.remove(temp)
        raise RemoteError(_where(conn), f"cannot replace {path}: {exc}") from None
    if read_file(conn, path, timeout) != data:
        raise RemoteError(_where(conn), f"{path} does not read back as written")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rewrite_sdk_config(
    conn: Connection,
    path: str,
    key: str,
    value: str,
    encoding: str | None = None,
    instance_id: str | None = None,
    dry_run: bool = False,
    timeout: float = 30.0,
    backup_tag: str = "",
) -> Change:
    """Set top-level string `key` of the JSON file `path` to `value`, changing only that value's bytes.

    `backup_tag` (the run key) goes into the backup's name, so `cleanup-run` can find it later.

    read -> validate JSON -> skip if unchanged -> unique backup -> temp file -> posix_rename -> read back.
    A file that is not valid JSON is refused (`sdkconfig.SdkConfigError`, naming the file and the error).
    `dry_run`: everything up to the write, returning the planned change.
    """
    remote_path = sftp_path(path)
    original = read_file(conn, remote_path, timeout)
    edit = sdkconfig.set_string(original, key, value, f"{_where(conn)}:{path}", encoding)
    change = Change(
        host=conn.host,
        port=conn.port,
        instance_id=instance_id,
        path=remote_path,
        key=key,
        before=edit.before,
        after=edit.after,
        changed=edit.changed,
        before_sha256=_sha256(original),
        after_sha256=_sha256(edit.data),
    )
    if not edit.changed or dry_run:
        return change
    sftp = _sftp(conn, timeout)
    try:
        mode = sftp.stat(remote_path).st_mode
        backup = _unique(remote_path, "bak", backup_tag)
        _write_new(sftp, backup, original, mode)
        _write_new(sftp, _written_path(backup), json.dumps({"key": key, "value": value}).encode(), None)
    except (OSError, paramiko.SSHException) as exc:
        raise RemoteError(_where(conn), f"cannot back up {path}: {exc}") from None
    _replace(conn, remote_path, edit.data, mode, timeout)
    log.info("%s: %s %s: %r -> %r (backup %s)", _where(conn), path, key, edit.before, edit.after, backup)
    return change.model_copy(update={"applied": True, "backup_path": backup})


def restore(conn: Connection, change: Change, force: bool = False, timeout: float = 30.0) -> bool:
    """Put back the file `change` replaced, from its backup. Returns whether anything was written.

    Refuses (unless `force`) when the key no longer holds the value `change` wrote, or the file differs from the
    original by more than that key: someone changed it since, and their change is not ours to undo.
    """
    if not (change.changed and change.applied and change.backup_path):
        return False
    only = None if force else (change.key, [change.after])
    return restore_from_backup(conn, change.path, change.backup_path, timeout, only)


def restore_from_backup(
    conn: Connection,
    path: str,
    backup_path: str,
    timeout: float = 30.0,
    only: tuple[str, list[str]] | None = None,
    encoding: str | None = None,
) -> bool:
    """Put `path` back as `backup_path` holds it (for a run killed before its undo); False if already so.

    With `only` = (key, the values tcscale wrote to it), restore only over tcscale's own edit: refuse when the key
    holds another value (`EditedSinceRun`: someone repointed it since) or the file differs from the backup by more
    than that key's value. Their change is not ours to undo.
    """
    remote_path = sftp_path(path)
    original = read_file(conn, backup_path, timeout)
    current = read_file(conn, remote_path, timeout)
    if current == original:
        return False
    if only is not None:
        key, written = only
        where = f"{_where(conn)}:{path}"
        value = sdkconfig.get_string(current, key, where, encoding)
        if value not in written:
            raise EditedSinceRun(_where(conn), path, key, value, written, backup_path)
        if sdkconfig.set_string(original, key, value, where, encoding).data != current:
            raise RemoteError(
                _where(conn), f"{path} changed since tcscale rewrote it (beyond {key}); not restoring over it"
            )
    try:
        mode = _sftp(conn, timeout).stat(remote_path).st_mode
    except (OSError, paramiko.SSHException):
        mode = None
    _replace(conn, remote_path, original, mode, timeout)
    log.info("%s: restored %s from %s", _where(conn), remote_path, backup_path)
    return True
