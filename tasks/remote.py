"""SSH to the servers (fabric 3 / paramiko): connect with verified host keys, run commands, restart apps, read files.

Rewriting sdk.config (with its backup, and its restore) is tasks/config_rewrite.py, over these connections.

Facts this follows: paramiko never sets TCP_NODELAY (a loopback handshake takes
~93 ms instead of ~5 ms), so the socket is opened here and passed as `sock`; fabric accepts any
host key by default, so the policy is set explicitly; Prefect's task timeouts do not interrupt a
blocking call, so every connect, SFTP operation and command has its own timeout. Keys and passwords are
never logged nor put in an error message.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import NamedTuple

import paramiko
from fabric import Config, Connection

from tasks.models import RuntimeProfile, SshSettings, sftp_path
from tasks.ssh_keys import (
    apply_host_key_policy,
    has_key,
    known_host_name,
    resolve_password,
    resolve_private_key,
)

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


def host_label(conn: Connection) -> str:
    """`host` or `[host]:port`, as known_hosts names it: what an error or a log line names."""
    return known_host_name(conn.host, conn.port)


def open_sftp(conn: Connection, timeout: float) -> paramiko.SFTPClient:
    """The connection's SFTP client, each of its operations bounded by `timeout`."""
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
        raise RemoteError(host_label(conn), f"`{command}` could not run: {exc}") from None
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
            raise RemoteError(host_label(conn), f"`{command}` could not run: {exc}") from None
        if not exited:
            raise RemoteCommandFailed(host_label(conn), command, None, "", f"no answer within {timeout:g}s")
        code = channel.exit_status  # -1: the channel closed without an exit status (the connection dropped)
    outcome = CommandResult(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
    if check and outcome.exit != 0:
        raise RemoteCommandFailed(host_label(conn), command, outcome.exit, outcome.stdout, outcome.stderr)
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
        with open_sftp(conn, timeout).open(sftp_path(path), "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise RemoteError(host_label(conn), f"{path}: no such file") from None
    except (OSError, paramiko.SSHException) as exc:
        raise RemoteError(host_label(conn), f"cannot read {path}: {exc}") from None
