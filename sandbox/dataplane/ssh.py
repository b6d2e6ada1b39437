"""SSH servers: one asyncssh listener per server address, key auth, SFTP confined to the disk, exec via the shell.

Each server has its own ed25519 host key, kept outside its disk (an image never carries it, so
a server launched from an image gets a new one); clients verify it strictly with the known_hosts
lines the admin API reports. Logins: user `root` (Linux) or `Administrator` (Windows) with one of
the instance's key pairs (`LoginSettings.KeyIds`), looked up at every login, or with the
instance's password (`LoginSettings.Password`, the only login of a Windows instance, which takes no
key pair), checked against the salted hash the cvm backend keeps (`sandbox.cvm.passwords`).

Fault hook: `POST /_sandbox/faults {"service": "ssh", "action": "exec" | "sftp" | "write" | "connect"}` (or
`"<instance id>/exec"` ... for one server): `exec` and `sftp` drop the SSH connection when a command
or an SFTP session starts, as a network failure mid-session would; `write` refuses an SFTP open for
writing with the rule's `error_message` (a full disk, a read-only file system); `connect` drops the connection
that meets it and stops the server's SSH listeners for the rule's `latency_ms` (sshd restarting: connections are
refused, ECONNREFUSED), then listens again.
"""

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import asyncssh

from sandbox.core.emulated_cloud import Cloud
from sandbox.core.faults import FaultRule
from sandbox.cvm.passwords import verify_password
from sandbox.dataplane.disks import guest_path, login_user, resolve_in_root
from sandbox.dataplane.shell import Guest, Shell

log = logging.getLogger("sandbox.dataplane")
CHUNK = 65536


class DiskSFTPServer(asyncssh.SFTPServer):
    """SFTP whose `/` is the disk: `..` stops at the root and symlinks are followed inside it.

    asyncssh's own `chroot=` maps paths lexically, so a symlink inside the disk pointing out would
    still be followed by the OS; every path is resolved here component by component instead.
    Symlinks are stored as the guest wrote them (a target is a guest path, never a host path).
    """

    def __init__(self, chan: Any, root: Path, write_fault: Any = None) -> None:
        super().__init__(chan)
        self.root = root
        self.write_fault = write_fault  # () -> error message when an `ssh` / `write` fault fires, else None

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if pflags & asyncssh.FXF_WRITE and self.write_fault is not None:
            message = self.write_fault()
            if message is not None:
                raise asyncssh.SFTPFailure(message)
        return super().open(path, pflags, attrs)

    def _host(self, path: bytes, follow_last: bool = True) -> bytes:
        return os.fsencode(resolve_in_root(self.root, os.fsdecode(path), "/", follow_last))

    def map_path(self, path: bytes) -> bytes:
        return self._host(path)

    def reverse_map_path(self, path: bytes) -> bytes:
        return guest_path(self.root, Path(os.fsdecode(path))).encode()

    def realpath(self, path: bytes) -> bytes:
        return self.reverse_map_path(self._host(path))

    def lstat(self, path: bytes) -> os.stat_result:
        return os.lstat(self._host(path, follow_last=False))

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise asyncssh.SFTPOpUnsupported("lsetstat is not supported")

    def remove(self, path: bytes) -> None:
        os.remove(self._host(path, follow_last=False))

    def rmdir(self, path: bytes) -> None:
        os.rmdir(self._host(path, follow_last=False))

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        os.mkdir(self._host(path, follow_last=False), 0o777 if attrs.permissions is None else attrs.permissions)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        target = self._host(newpath, follow_last=False)
        if os.path.lexists(target):
            raise asyncssh.SFTPFileAlreadyExists("File already exists")
        os.rename(self._host(oldpath, follow_last=False), target)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        os.replace(self._host(oldpath, follow_last=False), self._host(newpath, follow_last=False))

    def readlink(self, path: bytes) -> bytes:
        return os.fsencode(os.readlink(self._host(path, follow_last=False)))

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        os.symlink(oldpath, self._host(newpath, follow_last=False))

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        os.link(self._host(oldpath, follow_last=False), self._host(newpath, follow_last=False))


class GuestSSHServer(asyncssh.SSHServer):
    """One connection to one server: public-key auth against the instance's key pairs, or its password."""

    def __init__(self, servers: "SshServers", instance_id: str) -> None:
        self.servers = servers
        self.instance_id = instance_id
        self.connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.connection = conn
        self.servers.connections.setdefault(self.instance_id, set()).add(conn)
        refusal = self.servers.fired(self.instance_id, "connect")
        if refusal is not None:
            log.info("injected fault: sshd of %s down for %d ms", self.instance_id, refusal.latency_ms)
            conn.abort()
            self.servers.refuse_for(self.instance_id, refusal.latency_ms / 1000)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.servers.connections.get(self.instance_id, set()).discard(self.connection)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return self.servers.password_hash(self.instance_id) is not None

    async def validate_password(self, username: str, password: str) -> bool:
        # Hashing takes a few ms: off the event loop, so many logins at once do not stall every server.
        return await asyncio.to_thread(self.servers.password_matches, self.instance_id, username, password)

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        allowed = self.servers.authorized_keys(self.instance_id, username)
        return key.public_data in allowed


class SshServers:
    """Every server's SSH listeners; started and stopped by the data plane as instances change state."""

    def __init__(self, cloud: Cloud, shell: Shell, port: int, host_keys_dir: Path) -> None:
        self.cloud = cloud
        self.shell = shell
        self.port = port
        self.host_keys_dir = host_keys_dir
        self.listeners: dict[str, list[asyncssh.SSHAcceptor]] = {}
        self.guests: dict[str, Guest] = {}
        self.connections: dict[str, set[asyncssh.SSHServerConnection]] = {}
        self.addresses: dict[str, list[str]] = {}
        self._host_keys: dict[str, asyncssh.SSHKey] = {}
        self._relisten: set[asyncio.Task[None]] = set()

    # ---- host keys -----------------------------------------------------------------------------
    def host_key(self, instance_id: str) -> asyncssh.SSHKey:
        """The server's host key: loaded from outside its disk, or made on its first boot."""
        key = self._host_keys.get(instance_id)
        if key is not None:
            return key
        path = self.host_keys_dir / instance_id
        if path.exists():
            key = asyncssh.import_private_key(path.read_bytes())
        else:
            key = asyncssh.generate_private_key("ssh-ed25519")  # ~0.1 ms: 100 servers boot fast
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(key.export_private_key())
        self._host_keys[instance_id] = key
        return key

    def forget_host_key(self, instance_id: str) -> None:
        self._host_keys.pop(instance_id, None)

    def known_hosts(self, instance_id: str, addresses: list[str]) -> list[str]:
        """OpenSSH known_hosts lines: `[ip]:port keytype base64`, or `ip keytype base64` on port 22."""
        public = self.host_key(instance_id).export_public_key("openssh").decode().split()[:2]
        names = [address if self.port == 22 else f"[{address}]:{self.port}" for address in addresses]
        return [f"{name} {public[0]} {public[1]}" for name in names]

    # ---- authentication ----------------------------------------------------------------------
    def authorized_keys(self, instance_id: str, username: str) -> set[bytes]:
        cvm: Any = self.cloud.backends["cvm"]
        instance = cvm.state.instances.get(instance_id)
        if instance is None or instance.state != "RUNNING" or username != login_user(instance.platform):
            return set()
        keys = set()
        for key_id in instance.key_ids:
            key_pair = cvm.state.key_pairs.get(key_id)
            if key_pair is None:
                continue
            with contextlib.suppress(asyncssh.KeyImportError):
                keys.add(asyncssh.import_public_key(key_pair.public_key).public_data)
        return keys

    def password_hash(self, instance_id: str) -> str | None:
        """The instance's `LoginSettings.Password` as the cvm backend keeps it (a salted hash), if it has one."""
        instance = self.cloud.backends["cvm"].state.instances.get(instance_id)
        return getattr(instance, "password_hash", None) or None

    def password_matches(self, instance_id: str, username: str, password: str) -> bool:
        instance = self.cloud.backends["cvm"].state.instances.get(instance_id)
        expected = self.password_hash(instance_id)
        if instance is None or expected is None or instance.state != "RUNNING":
            return False
        if username != login_user(instance.platform):
            return False
        return verify_password(password, expected)

    # ---- listeners -------------------------------------------------------------------------------
    async def start(self, guest: Guest, addresses: list[str]) -> list[str]:
        """Listen on every address of the server; returns the errors (an address already in use, ...)."""
        await self.stop(guest.instance_id)
        self.guests[guest.instance_id] = guest
        host_key = self.host_key(guest.instance_id)
        results = await asyncio.gather(
            *(self._listen(guest, host_key, address) for address in addresses), return_exceptions=True
        )
        acceptors, errors = [], []
        for address, result in zip(addresses, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(f"SSH on {address}:{self.port}: {result}")
            else:
                acceptors.append(result)
        self.listeners[guest.instance_id] = acceptors
        self.addresses[guest.instance_id] = addresses
        return errors

    def refuse_for(self, instance_id: str, seconds: float) -> None:
        """sshd down for `seconds` (connections refused), then listening again on the same addresses, unless the
        server stopped or restarted meanwhile. Open sessions stay (sshd's children outlive a restart)."""
        guest, acceptors = self.guests.get(instance_id), self.listeners.pop(instance_id, [])
        for acceptor in acceptors:
            acceptor.close()

        async def back() -> None:
            await asyncio.sleep(seconds)
            if guest is None or self.guests.get(instance_id) is not guest or self.listeners.get(instance_id):
                return
            host_key = self.host_key(instance_id)
            addresses = self.addresses.get(instance_id, [])
            listening = (self._listen(guest, host_key, address) for address in addresses)
            results = await asyncio.gather(*listening, return_exceptions=True)
            self.listeners[instance_id] = [r for r in results if not isinstance(r, BaseException)]

        self._relisten.add(task := asyncio.get_running_loop().create_task(back()))
        task.add_done_callback(self._relisten.discard)

    async def _listen(self, guest: Guest, host_key: asyncssh.SSHKey, address: str) -> asyncssh.SSHAcceptor:
        instance_id = guest.instance_id
        return await asyncssh.listen(
            host=address,
            port=self.port,
            server_factory=lambda: GuestSSHServer(self, instance_id),
            server_host_keys=[host_key],
            process_factory=lambda process: self._session(guest, process),
            sftp_factory=lambda chan: self._sftp_session(guest, chan),
            encoding=None,
            allow_scp=False,
            reuse_address=True,
            login_timeout=30,
            gss_host=None,  # no Kerberos probing: it costs tens of ms per connection
        )

    def close_listeners(self, instance_id: str) -> None:
        """Synchronously refuse new connections and drop open ones (the rest of `stop` follows)."""
        for acceptor in self.listeners.get(instance_id, []):
            acceptor.close()
        for connection in list(self.connections.get(instance_id, ())):
            connection.abort()

    async def stop(self, instance_id: str) -> None:
        """The server goes down: refuse new connections, drop open ones, kill what it runs."""
        acceptors = self.listeners.pop(instance_id, [])
        for acceptor in acceptors:
            acceptor.close()
        for connection in list(self.connections.pop(instance_id, set())):
            connection.abort()
        guest = self.guests.pop(instance_id, None)
        if guest is not None:
            self.shell.kill_all(guest)
        for acceptor in acceptors:
            with contextlib.suppress(Exception):
                await acceptor.wait_closed()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(instance_id) for instance_id in list(self.listeners)))

    def is_up(self, instance_id: str) -> bool:
        return bool(self.listeners.get(instance_id))

    # ---- sessions ------------------------------------------------------------------------------
    def fired(self, instance_id: str, what: str) -> FaultRule | None:
        """The `ssh` fault rule firing for this connect / exec / sftp / write (other services' never count)."""
        faults = self.cloud.faults
        if not any(rule.service == "ssh" for rule in faults.rules):
            return None
        fired = [r for r in faults.pick("ssh", f"{instance_id}/{what}") if r.service == "ssh"]
        fired = fired or [r for r in faults.pick("ssh", what) if r.service == "ssh"]
        return fired[0] if fired else None

    def _fault(self, instance_id: str, what: str) -> str | None:
        """The message of an `ssh` fault rule firing for this exec / sftp / write."""
        rule = self.fired(instance_id, what)
        return rule.error_message if rule else None

    def _sftp_session(self, guest: Guest, chan: Any) -> DiskSFTPServer:
        if self._fault(guest.instance_id, "sftp") is not None:
            log.info("injected fault: SSH connection to %s dropped at SFTP start", guest.instance_id)
            chan.get_connection().abort()
        return DiskSFTPServer(chan, guest.disk, lambda: self._fault(guest.instance_id, "write"))

    async def _session(self, guest: Guest, process: asyncssh.SSHServerProcess) -> None:
        if self._fault(guest.instance_id, "exec") is not None:
            log.info("injected fault: SSH connection to %s dropped at exec", guest.instance_id)
            process.channel.get_connection().abort()
            return
        try:
            if self.shell.mode == "interpreter":
                await self._interpreted(guest, process)
            else:
                await self._spawned(guest, process)
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            pass  # the client went away
        except Exception:
            log.exception("exec failed on %s", guest.instance_id)
            with contextlib.suppress(Exception):
                process.stderr.write(b"sandbox: exec failed\n")
                process.exit(255)

    async def _interpreted(self, guest: Guest, process: asyncssh.SSHServerProcess) -> None:
        if process.command is None:
            process.stderr.write(b"interactive shells need user namespaces (the fallback shell runs commands only)\n")
            process.exit(1)
            return
        result = await self.shell.run(guest, process.command)
        process.stdout.write(result.stdout)
        process.stderr.write(result.stderr)
        process.exit(result.exit_status)

    async def _spawned(self, guest: Guest, process: asyncssh.SSHServerProcess) -> None:
        child = await self.shell.spawn(guest, process.command)
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        feeding = asyncio.ensure_future(_feed(process.stdin, child.stdin))
        try:
            await asyncio.gather(_drain(child.stdout, process.stdout), _drain(child.stderr, process.stderr))
            code = await child.wait()
        finally:
            feeding.cancel()
            guest.processes.discard(child)
        process.exit(code if code >= 0 else 128 - code)


async def _feed(source: asyncssh.SSHReader, sink: asyncio.StreamWriter) -> None:
    """The client's stdin into the command, closed at the client's EOF."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, BrokenPipeError, asyncssh.Error):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()


async def _drain(source: asyncio.StreamReader, sink: asyncssh.SSHWriter) -> None:
    while data := await source.read(CHUNK):
        sink.write(data)
        await sink.drain()
