"""Business servers: point their `authServerUrl` at the session tier's VIP and restart their app.

The rewrite is a byte-preserving in-place edit with a backup (`tasks.remote`); its rollback hook
restores the file from that backup and restarts the app again, so a failed run leaves every
`sdk.config` as it was.
"""

from __future__ import annotations

import logging

from fabric import Connection
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import remote
from tasks.cloud import retrying
from tasks.cvm import Server
from tasks.models import Change, RuntimeProfile, SshSettings
from tasks.transactions import recalled, remember

AUTH_KEY = "authServerUrl"
log = logging.getLogger("tcscale.repoint")


def _host(server: Server) -> str:
    return server.private_ip


@task(name="plan-config-change", cache_policy=NO_CACHE)
def plan_config_change(server: Server, ssh: SshSettings, profile: RuntimeProfile, auth_url: str) -> Change:
    """Read and validate the server's sdk.config over SSH; return the change a run would make (writes nothing).

    This is the preflight of a business server: SSH works, the file exists and is valid JSON.
    """
    with remote.session(_host(server), ssh, profile, server.instance_id) as conn:
        return remote.rewrite_sdk_config(
            conn,
            profile.config_path,
            AUTH_KEY,
            auth_url,
            profile.config_encoding,
            server.instance_id,
            dry_run=True,
            timeout=ssh.io_timeout,
        )


@task(name="repoint-business-server", cache_policy=NO_CACHE)
@retrying(attempts=2, first=2.0, retry_if=remote.connection_trouble)  # not Prefect retries: see `retrying`
def repoint(server: Server, ssh: SshSettings, profile: RuntimeProfile, auth_url: str, run_key: str) -> Change:
    """Rewrite authServerUrl (backup named after the run) and restart the app with the runtime profile's command."""
    with remote.session(_host(server), ssh, profile, server.instance_id) as conn:
        change = remote.rewrite_sdk_config(
            conn, profile.config_path, AUTH_KEY, auth_url, profile.config_encoding, server.instance_id,
            timeout=ssh.io_timeout, backup_tag=run_key,
        )  # fmt: skip
        remember(server=server, ssh=ssh, profile=profile, change=change)
        try:
            remote.restart(conn, profile, timeout=ssh.command_timeout)
        except Exception:
            # A failed task gets no rollback hook: put this server back now, then fail.
            _put_back(conn, server, ssh, profile, change)
            raise
    return change


def _put_back(conn: Connection, server: Server, ssh: SshSettings, profile: RuntimeProfile, change: Change) -> None:
    """Restore the file and restart, over `conn`, or over a new connection when that one broke; never raises."""
    try:
        if remote.restore(conn, change, timeout=ssh.io_timeout):
            remote.restart(conn, profile, timeout=ssh.command_timeout)
        return
    except Exception as error:
        if not remote.connection_trouble(error):
            log.error("%s: could not put %s back: %s", server.instance_id, change.path, error)
            return
    try:
        restore(server, ssh, profile, change)
    except Exception as error:
        log.error("%s: could not put %s back over a new connection: %s", server.instance_id, change.path, error)


@repoint.on_rollback
def _restore_config(txn) -> None:  # type: ignore[no-untyped-def]
    server, ssh, profile, change = recalled(txn, "server", "ssh", "profile", "change")
    if change is not None:
        restore(server, ssh, profile, change)


def restore(server: Server, ssh: SshSettings, profile: RuntimeProfile, change: Change) -> bool:
    """Put sdk.config back from the run's backup and restart the app; True when something was restored."""
    with remote.session(_host(server), ssh, profile, server.instance_id) as conn:
        restored = remote.restore(conn, change, timeout=ssh.io_timeout)
        if restored or change.changed:
            remote.restart(conn, profile, timeout=ssh.command_timeout)
    return restored
