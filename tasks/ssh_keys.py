"""SSH credentials and host keys: private keys (file, text or Prefect Secret block), passwords, and the
host-key policies (`strict` known_hosts, `tofu` recorded per instance, `insecure` opt-in).

Parsed keys and known_hosts are cached per process: parsing an RSA key costs ~40 ms of CPU, and a run
opens one connection per business server.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import logging
import threading
import uuid
import warnings
from pathlib import Path

import paramiko
from fabric import Connection

from tasks.models import HostKeyPolicy, SshSettings

log = logging.getLogger("tcscale.remote")


# --- keys ------------------------------------------------------------------------------------------------

_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


# Parsed keys by a digest of their text (never the text itself): loading an RSA key costs ~40 ms of CPU,
# which made 100 parallel SSH sessions take 6 s instead of 1 s when every connection parsed it again.
_parsed_keys: dict[str, paramiko.PKey] = {}


def load_private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """A private key from its text (OpenSSH or PEM), parsed once per process. The error never quotes the key."""
    digest = hashlib.sha256(f"{passphrase or ''}\0{text}".encode()).hexdigest()
    if (parsed := _parsed_keys.get(digest)) is not None:
        return parsed
    for key_class in _KEY_CLASSES:
        try:
            parsed = key_class.from_private_key(io.StringIO(text), password=passphrase)
        except (paramiko.SSHException, ValueError):
            continue
        _parsed_keys[digest] = parsed
        return parsed
    raise ValueError("the private key is not an Ed25519, ECDSA or RSA key in OpenSSH/PEM form (or is encrypted)")


def resolve_private_key(settings: SshSettings) -> paramiko.PKey:
    """The login key from `private_key`, `key_file` or the Prefect Secret block `key_secret_block`."""
    if settings.private_key is not None:
        return load_private_key(settings.private_key.get_secret_value())
    if settings.key_file is not None:
        try:
            return load_private_key(Path(settings.key_file).read_text())
        except OSError as exc:
            raise ValueError(f"cannot read the private key file {settings.key_file}: {exc.strerror}") from None
    if settings.key_secret_block:
        from prefect.blocks.system import Secret  # late: loading a block needs a Prefect API

        return load_private_key(str(Secret.load(settings.key_secret_block).get()))
    raise ValueError("no SSH private key: set key_file, key_secret_block or private_key")


def has_key(settings: SshSettings) -> bool:
    return settings.private_key is not None or settings.key_file is not None or bool(settings.key_secret_block)


def resolve_password(settings: SshSettings) -> str | None:
    """The login password from `password` or the Prefect Secret block `password_secret_block` (None: neither)."""
    if settings.password is not None:
        return settings.password.get_secret_value()
    if settings.password_secret_block:
        from prefect.blocks.system import Secret  # late: loading a block needs a Prefect API

        value = Secret.load(settings.password_secret_block).get()
        if not isinstance(value, str) or not value:
            raise ValueError(f"the Prefect Secret block {settings.password_secret_block!r} does not hold a password")
        return value
    return None


# --- host keys -------------------------------------------------------------------------------------------


def known_host_name(host: str, port: int) -> str:
    """How known_hosts names a server: `ip` on port 22, `[ip]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def parse_known_hosts(lines: list[str], file: Path | None = None) -> paramiko.HostKeys:
    """The known host keys of `lines` and `file`; parsed once per content (read-only: do not add to it)."""
    stamp = None
    if file is not None:
        with contextlib.suppress(OSError):
            info = Path(file).stat()
            stamp = (info.st_mtime_ns, info.st_size)
    return _parse_known_hosts(tuple(lines), str(file) if file is not None else None, stamp)


@functools.lru_cache(maxsize=16)
def _parse_known_hosts(lines: tuple[str, ...], file: str | None, _stamp: object) -> paramiko.HostKeys:
    # ~0.1 ms a line: for 100 servers, parsing at every connection cost more than the SSH handshake.
    host_keys = paramiko.HostKeys()
    if file is not None:
        host_keys.load(file)
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        if entry is None:
            raise ValueError(f"not a known_hosts line: {line[:80]!r}")
        for name in entry.hostnames:
            host_keys.add(name, entry.key.get_name(), entry.key)
    return host_keys


class TofuStore:
    """Host keys first seen, per instance id (an IP is reused by the next server; an instance id never is).

    A JSON file `{instance_id: "keytype base64"}`, written atomically; safe across threads.
    """

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def get(self, instance_id: str) -> paramiko.PKey | None:
        line = self._read().get(instance_id)
        if not line:
            return None
        key_type, key_base64 = line.split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_base64))

    def record(self, instance_id: str, key: paramiko.PKey) -> None:
        with self._lock:
            keys = self._read()
            keys[instance_id] = f"{key.get_name()} {key.get_base64()}"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
            partial.write_text(json.dumps(keys, indent=1, sort_keys=True))
            partial.replace(self.path)


class _RecordFirstKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, store: TofuStore, instance_id: str) -> None:
        self.store = store
        self.instance_id = instance_id

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.info("trusting %s's host key on first use (%s %s)", self.instance_id, key.get_name(), key.fingerprint)
        self.store.record(self.instance_id, key)


class _AcceptAnyKey(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        warnings.warn(f"insecure: accepting {hostname}'s host key without verification", stacklevel=2)


def host_key_line(conn: Connection) -> str:
    """The connected server's key as a known_hosts line: give it to a later run's strict policy."""
    key = conn.client.get_transport().get_remote_server_key()
    return f"{known_host_name(conn.host, conn.port)} {key.get_name()} {key.get_base64()}"


def apply_host_key_policy(conn: Connection, settings: SshSettings, instance_id: str | None) -> None:
    client = conn.client
    name = known_host_name(conn.host, conn.port)
    policy = settings.host_key_policy
    if policy is HostKeyPolicy.insecure:
        log.warning("SSH to %s without host key verification (host_key_policy=insecure)", name)
        client.set_missing_host_key_policy(_AcceptAnyKey())
        return
    known = client.get_host_keys()
    entries = parse_known_hosts(settings.known_hosts, settings.known_hosts_file).lookup(name)
    if entries:
        for key_type, key in entries.items():
            known.add(name, key_type, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if policy is HostKeyPolicy.tofu and not entries:
        if settings.tofu_store is None:
            raise ValueError("host_key_policy=tofu needs tofu_store (a file to record first-seen keys in)")
        store = TofuStore(settings.tofu_store)
        recorded = store.get(instance_id or name)
        if recorded is not None:
            known.add(name, recorded.get_name(), recorded)  # seen before: verify strictly
        else:
            client.set_missing_host_key_policy(_RecordFirstKey(store, instance_id or name))
