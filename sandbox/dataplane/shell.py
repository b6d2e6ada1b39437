"""Exec on a server: a real /bin/sh whose `/` is the server's disk, or a small interpreter when that is forbidden.

Namespace mode (the normal one): the child process enters a new user + mount namespace (root
inside, the sandbox's own uid outside), bind-mounts the host's /usr read-only into the disk
(/bin, /lib, /lib64 are symlinks into usr in every disk), /dev and /proc, mounts the service
manager shims over /usr/local/bin, chroots into the disk and execs `/bin/sh -c COMMAND`. The
namespace calls are made with ctypes in the forked child (one exec instead of the ~6 of
`unshare … sh -c 'mount …; chroot …'`): ~7 ms per command instead of ~17 ms.

Interpreter mode (kernels that forbid unprivileged user namespaces, e.g. AppArmor): the commands
the guests need are interpreted in Python against the disk (`sandbox.dataplane.shell_fallback`).

Service managers (`pm2`, `systemctl`, `powershell`) are shims that POST argv and $PWD to the
unix socket `/run/sandbox-guest.sock` inside the disk, where the data plane answers with the
guest supervisor (`Guests.control`). `curl` is a shim too: it connects from the server's own
private address, so the security groups of the server it calls see the right source, and to the
port the sandbox serves a real port at (ports.py), so `curl http://VIP/mina_auth/` works as on the real
server. `powershell` (Windows guests) runs in the guest supervisor, Invoke-WebRequest included.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.dataplane.disks import SOCKET_NAME, home_dir

log = logging.getLogger("sandbox.dataplane")

Control = Callable[[list[str], str], Awaitable[tuple[int, str]]]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWUSER = 0x00020000, 0x04000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; stay clear of it
GUEST_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"

_CONTROL_SHIM = """#!/bin/sh
# Sandbox shim: the service manager of this server is the sandbox's guest supervisor.
answer=$(mktemp) || exit 1
status=$(printf '%s\\0' "$PWD" "$(basename "$0")" "$@" | /usr/bin/curl -s --unix-socket /run/sandbox-guest.sock \\
    --data-binary @- -o "$answer" -w '%{http_code}' http://guest/control)
if [ "$status" != 200 ]; then rm -f "$answer"; echo "$(basename "$0"): guest supervisor unreachable" >&2; exit 1; fi
{ IFS= read -r code; cat; } < "$answer"
rm -f "$answer"
exit "$code"
"""
_CURL_SHIM = """#!/bin/sh
# Sandbox shim: connect from this server's own address (security groups check the source), to the port
# the sandbox serves each real port at (SANDBOX_CONNECT_TO: curl --connect-to rules, e.g. ":80::10080").
for rule in $SANDBOX_CONNECT_TO; do set -- --connect-to "$rule" "$@"; done
if [ -n "$SANDBOX_PRIVATE_IP" ]; then exec /usr/bin/curl --interface "$SANDBOX_PRIVATE_IP" "$@"; fi
exec /usr/bin/curl "$@"
"""
SHIMS = {"pm2": _CONTROL_SHIM, "systemctl": _CONTROL_SHIM, "powershell": _CONTROL_SHIM, "curl": _CURL_SHIM}


@dataclass
class Guest:
    """What exec needs to know of one server."""

    instance_id: str
    disk: Path
    platform: str
    private_ip: str
    host_name: str
    control: Control
    port_map: dict[int, int] = field(default_factory=dict)  # real port -> the port the sandbox serves it at
    socket_path: Path | None = None  # where the control socket really listens (if not inside the disk)
    processes: set[asyncio.subprocess.Process] = field(default_factory=set)

    @property
    def home(self) -> str:
        return home_dir(self.platform)

    def environment(self) -> dict[str, str]:
        user = "Administrator" if self.platform == "Windows" else "root"
        return {
            "PATH": GUEST_PATH,
            "HOME": self.home,
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            "HOSTNAME": self.host_name,
            "SANDBOX_PRIVATE_IP": self.private_ip,
            "SANDBOX_CONNECT_TO": " ".join(f":{real}::{port}" for real, port in self.port_map.items() if real != port),
        }


@dataclass
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes


class _Libc:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL(None, use_errno=True)

    def call(self, name: str, *args: object) -> None:
        if getattr(self.lib, name)(*args) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{name}: {os.strerror(errno)}")


def _enter_disk(
    libc: _Libc, disk: bytes, shims: bytes, socket: bytes | None, home: str, host_name: bytes
) -> Callable[[], None]:
    """The forked child's preparation: own namespaces, host /usr read-only, shims, then chroot."""
    uid, gid = os.getuid(), os.getgid()

    def prepare() -> None:
        libc.call("unshare", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS)
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as proc_file:
                proc_file.write(text)
        libc.call("mount", b"/usr", disk + b"/usr", None, MS_BIND | MS_REC, None)
        libc.call("mount", None, disk + b"/usr", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
        libc.call("mount", shims, disk + b"/usr/local/bin", None, MS_BIND, None)
        libc.call("mount", b"/dev", disk + b"/dev", None, MS_BIND | MS_REC, None)
        libc.call("mount", b"/proc", disk + b"/proc", None, MS_BIND | MS_REC, None)
        if socket is not None:
            libc.call("mount", socket, disk + b"/run/" + SOCKET_NAME.encode(), None, MS_BIND, None)
        libc.call("sethostname", host_name, len(host_name))  # `hostname` answers the server's name
        os.chroot(disk)
        try:
            os.chdir(home)
        except OSError:
            os.chdir("/")

    return prepare


class Shell:
    """Runs commands on servers' disks; `mode` is `namespace` or `interpreter` (probed once)."""

    def __init__(self, workdir: Path, mode: str | None = None) -> None:
        self.workdir = workdir
        self.shims = workdir / "shims"
        self.shims.mkdir(parents=True, exist_ok=True)
        for name, text in SHIMS.items():
            shim = self.shims / name
            shim.write_text(text)
            shim.chmod(0o755)
        self._libc = _Libc()
        self.mode = mode or ("namespace" if self._namespaces_work() else "interpreter")
        if self.mode == "interpreter":
            log.warning("unprivileged user namespaces are forbidden here: exec falls back to the interpreter")

    def _namespaces_work(self) -> bool:
        """Probe once: run `true` in a throwaway disk exactly as a command would run."""
        if not Path("/usr/local/bin").is_dir():
            return False
        with tempfile.TemporaryDirectory(prefix="tcscale-probe-") as folder:
            disk = Path(folder)
            for name in ("usr", "dev", "proc", "run", "tmp"):
                (disk / name).mkdir()
            (disk / "bin").symlink_to("usr/bin")
            (disk / "lib").symlink_to("usr/lib")
            (disk / "lib64").symlink_to("usr/lib64")
            try:
                prepare = _enter_disk(self._libc, bytes(disk), bytes(self.shims), None, "/", b"probe")
                done = subprocess.run(["/bin/sh", "-c", "true"], preexec_fn=prepare, timeout=10, check=False)
            except (OSError, subprocess.SubprocessError):
                return False
            return done.returncode == 0

    # ---- namespace mode -------------------------------------------------------------------------
    async def spawn(self, guest: Guest, command: str | None) -> asyncio.subprocess.Process:
        """Start `/bin/sh -c COMMAND` (or an interactive `/bin/sh`) on the guest's disk, with pipes."""
        argv = ["/bin/sh", "-c", command] if command is not None else ["/bin/sh", "-i"]
        prepare = _enter_disk(
            self._libc,
            bytes(guest.disk),
            bytes(self.shims),
            bytes(guest.socket_path) if guest.socket_path else None,
            guest.home,
            guest.host_name.encode(),
        )
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=guest.environment(),
            preexec_fn=prepare,
            start_new_session=True,  # its own process group: stopping the server kills what it started
        )
        guest.processes.add(process)
        return process

    async def run(self, guest: Guest, command: str, stdin: bytes = b"", timeout: float = 60.0) -> CommandResult:
        """Run one command to completion (both modes)."""
        if self.mode == "interpreter":
            from sandbox.dataplane.shell_fallback import interpret

            return await asyncio.wait_for(interpret(guest, command), timeout)
        process = await self.spawn(guest, command)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout)
        finally:
            guest.processes.discard(process)
        return CommandResult(process.returncode or 0, stdout, stderr)

    @staticmethod
    def kill_all(guest: Guest) -> None:
        """The server stops: every process it started dies with it."""
        for process in list(guest.processes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        guest.processes.clear()

    # ---- the service managers' unix socket ---------------------------------------------------
    async def serve_control(self, guest: Guest) -> asyncio.AbstractServer:
        """Listen at `<disk>/run/sandbox-guest.sock` for the shims (at a short path, bind-mounted, if too long)."""
        inside = guest.disk / "run" / SOCKET_NAME
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.unlink(missing_ok=True)
        if len(bytes(inside)) <= SOCKET_PATH_MAX:
            listen_at, guest.socket_path = inside, None
        else:
            short = Path(tempfile.gettempdir()) / f"tcsg-{os.getuid()}"
            short.mkdir(mode=0o700, exist_ok=True)
            listen_at = guest.socket_path = short / f"{guest.instance_id}.sock"
            listen_at.unlink(missing_ok=True)
            inside.touch()  # the bind mount's mount point

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                body = await _read_http_body(reader)
                cwd, *argv = body.decode(errors="replace").split("\0")[:-1] or ["/"]
                code, output = await guest.control(argv, cwd)
                payload = f"{code}\n{output}".encode()
            except Exception as error:  # the shim must always get an answer it can print
                log.exception("guest control failed on %s", guest.instance_id)
                payload = f"1\nsandbox guest supervisor error: {type(error).__name__}\n".encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + payload)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

        return await asyncio.start_unix_server(answer, path=str(listen_at))


async def _read_http_body(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return await reader.readexactly(length) if length else b""
