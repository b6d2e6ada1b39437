"""SSH credentials and host keys: private keys and passwords (a Prefect Secret block or a file on the worker,
never a parameter), and the host-key policies (`strict` known_hosts, `tofu` recorded per instance in Prefect
Variables every worker sees, `insecure` opt-in).

Parsed keys and known_hosts are cached per process: parsing an RSA key costs ~40 ms of CPU, and a run
opens one connection per business server.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import re
import warnings
from pathlib import Path

import paramiko
from fabric import Connection
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate
from prefect.exceptions import ObjectAlreadyExists

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


def _read_worker_file(path: Path, what: str) -> str:
    """A file on the worker; the error names the file and the reason, never its content."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the {what} file {path} is not text") from None


def _secret_block(name: str, what: str) -> str:
    """The string a Prefect Secret block holds; the error names the block, never its value."""
    from prefect.blocks.system import Secret  # late: loading a block needs a Prefect API

    value = Secret.load(name).get()
    if not isinstance(value, str) or not value:
        raise ValueError(f"the Prefect Secret block {name!r} does not hold a {what}")
    return value


def resolve_private_key(settings: SshSettings) -> paramiko.PKey:
    """The login key from the file `key_file` or the Prefect Secret block `key_secret_block`."""
    if settings.key_file is not None:
        return load_private_key(_read_worker_file(settings.key_file, "private key"))
    if settings.key_secret_block:
        return load_private_key(_secret_block(settings.key_secret_block, "private key"))
    raise ValueError("no SSH private key: set key_file or key_secret_block")


def has_key(settings: SshSettings) -> bool:
    return settings.key_file is not None or bool(settings.key_secret_block)


def resolve_password(settings: SshSettings) -> str | None:
    """The login password from the file `password_file` (its first line) or the Prefect Secret block
    `password_secret_block`; None: neither is set."""
    if settings.password_file is not None:
        lines = _read_worker_file(settings.password_file, "password").splitlines()
        if not lines or not lines[0]:
            raise ValueError(f"the password file {settings.password_file} is empty")
        return lines[0]
    if settings.password_secret_block:
        return _secret_block(settings.password_secret_block, "password")
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
    """Host keys first seen, one Prefect Variable per server: `<prefix>-<instance id>` holds the known_hosts line
    `[ip]:port type base64` (an IP is reused by the next server; an instance id never is).

    Prefect keeps them, so every worker sees what any run trusted. Recording creates the Variable and creation is
    atomic on the Prefect server: of two runs meeting a new server at once, the first key recorded is the one
    trusted, and the other run's connection is checked against it. Nothing is read, changed and written back,
    so no run can lose another's entry (one Variable holding every key would also cap them at ~40: Prefect
    limits a Variable's value to 5000 characters). An operator forgets a key by deleting its Variable.
    """

    TAG = "tcscale-known-hosts"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def name(self, instance_id: str) -> str:
        if not re.fullmatch(r"[a-z0-9_-]+", instance_id):
            raise ValueError(f"host_key_policy=tofu: {instance_id!r} cannot name a Prefect Variable")
        return f"{self.prefix}-{instance_id}"

    def get(self, instance_id: str) -> paramiko.PKey | None:
        """The key recorded for `instance_id`, None if none is."""
        name = self.name(instance_id)
        try:
            with get_client(sync_client=True) as client:
                variable = client.read_variable_by_name(name)
        except Exception as exc:
            raise ValueError(f"cannot read the recorded host key (Prefect Variable {name!r}): {exc}") from None
        return None if variable is None else _key_of_line(name, variable.value)

    def record(self, instance_id: str, host_name: str, key: paramiko.PKey) -> paramiko.PKey:
        """Record `key` as `instance_id`'s unless a key is recorded already; return the key recorded."""
        name = self.name(instance_id)
        line = f"{host_name} {key.get_name()} {key.get_base64()}"
        try:
            with get_client(sync_client=True) as client:
                try:
                    client.create_variable(VariableCreate(name=name, value=line, tags=[self.TAG]))
                    return key
                except ObjectAlreadyExists:  # another run recorded it first: theirs is the trusted key
                    variable = client.read_variable_by_name(name)
        except Exception as exc:
            raise ValueError(f"cannot record the host key (Prefect Variable {name!r}): {exc}") from None
        if variable is None:  # recorded, then deleted at once: trust nothing this time
            raise ValueError(f"the recorded host key (Prefect Variable {name!r}) vanished while recording; retry")
        return _key_of_line(name, variable.value)


def _key_of_line(name: str, value: object) -> paramiko.PKey:
    entry = paramiko.hostkeys.HostKeyEntry.from_line(value) if isinstance(value, str) else None
    if entry is None or entry.key is None:
        raise ValueError(f"Prefect Variable {name!r} is not a known_hosts line (`[ip]:port type base64`)")
    return entry.key


class _RecordFirstKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, store: TofuStore, instance_id: str) -> None:
        self.store = store
        self.instance_id = instance_id

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        recorded = self.store.record(self.instance_id, hostname, key)
        if (recorded.get_name(), recorded.get_base64()) != (key.get_name(), key.get_base64()):
            raise paramiko.BadHostKeyException(hostname, key, recorded)
        log.info("trusting %s's host key on first use (%s %s)", self.instance_id, key.get_name(), key.fingerprint)


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
        if not instance_id:
            raise ValueError(f"host_key_policy=tofu records keys per instance id: none was given for {name}")
        store = TofuStore(settings.tofu_variable)
        recorded = store.get(instance_id)
        if recorded is not None:
            known.add(name, recorded.get_name(), recorded)  # seen before: verify strictly
        else:
            client.set_missing_host_key_policy(_RecordFirstKey(store, instance_id))
