"""sdk.config on a server, over SFTP: rewrite one key with a backup named after the run, find a run's backups and
what it wrote, restore from a backup only over tcscale's own edit.

Every write is atomic (a temp file beside the file, posix_rename over it, read back); a backup is never clobbered
(exclusive create). Beside each backup, a record of the value written: what an undo may restore over, and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import stat
import time
import uuid

import paramiko
from fabric import Connection

from tasks import sdkconfig
from tasks.models import Change, sftp_path
from tasks.remote import RemoteError, host_label, open_sftp, read_file

log = logging.getLogger("tcscale.remote")  # the SSH work's logger, as tasks/ssh_keys.py's


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
        entries = open_sftp(conn, timeout).listdir(folder or "/")
    except (OSError, paramiko.SSHException) as exc:
        raise RemoteError(host_label(conn), f"cannot list {folder}: {exc}") from None
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
            with open_sftp(conn, timeout).open(_written_path(backup), "rb") as file:
                record = json.loads(file.read())
        except FileNotFoundError:
            continue
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise RemoteError(host_label(conn), f"cannot read {_written_path(backup)}: {exc}") from None
        if record.get("key") == key and isinstance(record.get("value"), str) and record["value"] not in values:
            values.append(record["value"])
    return values


def _replace(conn: Connection, path: str, data: bytes, mode: int | None, timeout: float) -> None:
    """Atomically make `path` hold `data`: a temp file beside it, then posix_rename over it, then read back."""
    sftp = open_sftp(conn, timeout)
    temp = _unique(path, "tmp")
    try:
        _write_new(sftp, temp, data, mode)
        sftp.posix_rename(temp, path)  # plain SFTP rename refuses to overwrite
    except (OSError, paramiko.SSHException) as exc:
        with contextlib.suppress(Exception):
            sftp.remove(temp)
        raise RemoteError(host_label(conn), f"cannot replace {path}: {exc}") from None
    if read_file(conn, path, timeout) != data:
        raise RemoteError(host_label(conn), f"{path} does not read back as written")


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
    edit = sdkconfig.set_string(original, key, value, f"{host_label(conn)}:{path}", encoding)
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
    sftp = open_sftp(conn, timeout)
    try:
        mode = sftp.stat(remote_path).st_mode
        backup = _unique(remote_path, "bak", backup_tag)
        _write_new(sftp, backup, original, mode)
        _write_new(sftp, _written_path(backup), json.dumps({"key": key, "value": value}).encode(), None)
    except (OSError, paramiko.SSHException) as exc:
        raise RemoteError(host_label(conn), f"cannot back up {path}: {exc}") from None
    _replace(conn, remote_path, edit.data, mode, timeout)
    log.info("%s: %s %s: %r -> %r (backup %s)", host_label(conn), path, key, edit.before, edit.after, backup)
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
        where = f"{host_label(conn)}:{path}"
        value = sdkconfig.get_string(current, key, where, encoding)
        if value not in written:
            raise EditedSinceRun(host_label(conn), path, key, value, written, backup_path)
        if sdkconfig.set_string(original, key, value, where, encoding).data != current:
            raise RemoteError(
                host_label(conn), f"{path} changed since tcscale rewrote it (beyond {key}); not restoring over it"
            )
    try:
        mode = open_sftp(conn, timeout).stat(remote_path).st_mode
    except (OSError, paramiko.SSHException):
        mode = None
    _replace(conn, remote_path, original, mode, timeout)
    log.info("%s: restored %s from %s", host_label(conn), remote_path, backup_path)
    return True
