"""Business servers: point their `authServerUrl` at the session tier's VIP, restart their app, prove it took.

The rewrite is a byte-preserving in-place edit with a backup named after the run (`tasks.config_rewrite`). A
restart counts only when the app's process is a new one (pm2 / systemd / IIS say so), the app answers
its real routes, stays up, and reaches the session service through the URL it loaded. Undo is
`restore_run_backup`: the file back from the run's own backup, the app restarted and verified again; only while
authServerUrl holds the value the run wrote (recorded beside the backup), never over a later edit.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks import apps, config_rewrite, remote, sdkconfig
from tasks.cloud import retrying
from tasks.cvm import Server
from tasks.health import HealthCheck, Probe, probe_session_reach
from tasks.models import Change, RuntimeProfile, SshSettings

AUTH_KEY = "authServerUrl"


class AppCheckFailed(Exception):
    pass


class Repointed(BaseModel):
    """What happened on one business server."""

    instance_id: str
    change: Change
    restarted: bool = Field(description="False: the file already held the URL, and not by this run's hand")
    before: apps.AppProcess | None = None
    after: apps.AppProcess | None = None
    probes: list[Probe] = Field(default_factory=list)


def _host(server: Server) -> str:
    return server.private_ip


@task(name="plan-config-change", cache_policy=NO_CACHE)
def plan_config_change(server: Server, ssh: SshSettings, profile: RuntimeProfile, auth_url: str) -> Change:
    """Read and validate the server's sdk.config over SSH; return the change a run would make (writes nothing).

    This is the preflight of a business server: SSH works, the file exists and is valid JSON.
    """
    with remote.session(_host(server), ssh, profile, server.instance_id) as conn:
        return config_rewrite.rewrite_sdk_config(
            conn, profile.config_path, AUTH_KEY, auth_url, profile.config_encoding, server.instance_id,
            dry_run=True, timeout=ssh.io_timeout,
        )  # fmt: skip


@task(name="reach-vip-from-server", cache_policy=NO_CACHE)
@retrying(attempts=2, first=1.0, retry_if=remote.connection_trouble)
def reach_from(server: Server, ssh: SshSettings, profile: RuntimeProfile, url: str, timeout: float) -> Probe:
    """The business server itself reaches `url` (curl / Invoke-WebRequest over SSH): a security-group gap
    between it and the session tier shows here, before its config changes."""
    with remote.session(_host(server), ssh, profile, server.instance_id) as conn:
        probe = apps.reach_from_server(conn, profile, url, timeout)
    return probe.model_copy(update={"target": f"{server.instance_id} -> {url}"})


@task(name="repoint-business-server", cache_policy=NO_CACHE)
@retrying(attempts=2, first=2.0, retry_if=remote.connection_trouble)  # not Prefect retries: see `retrying`
def repoint_server(
    server: Server,
    ssh: SshSettings,
    profile: RuntimeProfile,
    check: HealthCheck,
    auth_url: str,
    run_key: str,
    timeout: float,
) -> Repointed:
    """Rewrite authServerUrl (backup named after the run), restart the app, and prove the restart took.

    A file that already holds the URL is restarted only when this run's backup of it exists (an earlier
    attempt of this run wrote it and may have died before the restart); else an earlier scale-out did it.
    A failure is not undone here: the flow undoes every server once all parallel repoints have finished.
    """
    host, port = _host(server), check.port_for(profile)
    with remote.session(host, ssh, profile, server.instance_id) as conn:
        change = config_rewrite.rewrite_sdk_config(
            conn, profile.config_path, AUTH_KEY, auth_url, profile.config_encoding, server.instance_id,
            timeout=ssh.io_timeout, backup_tag=run_key,
        )  # fmt: skip
        ours = change.changed or bool(config_rewrite.backups(conn, profile.config_path, run_key, ssh.io_timeout))
        before = after = None
        if ours:
            before = apps.process_identity(conn, profile)
            remote.restart(conn, profile, timeout=ssh.command_timeout)
            after = apps.wait_restarted(conn, profile, before, host, port, check, timeout)
    probes = []
    if before is not None and after is not None:
        detail = f"{profile.name}: process {before.identity or '(none)'} -> {after.identity}, and it held"
        probes.append(Probe(target=f"{server.instance_id} restarted after the edit", ok=True, detail=detail))
    reached = probe_session_reach(host, port, check)
    reached = reached.model_copy(update={"target": f"{server.instance_id} {reached.target}"})
    probes.append(reached)
    if not reached.ok:
        raise AppCheckFailed(
            f"{server.instance_id} ({host}): the app does not reach the session service through {auth_url}: "
            f"{reached.detail}"
        )
    return Repointed(
        instance_id=server.instance_id, change=change, restarted=ours, before=before, after=after, probes=probes
    )


class RunConfig(BaseModel):
    """A business server's sdk.config against run `run_key`'s backups of it (the file differs from the oldest)."""

    instance_id: str
    path: str
    backup: str = Field(description="the run's oldest backup: the file as it was before the run")
    value: str = Field(description="authServerUrl now")
    written: list[str] = Field(description="the values the run wrote to authServerUrl")

    @property
    def runs_own(self) -> bool:
        """authServerUrl still holds what the run wrote: the run's to undo (a later edit of it is not)."""
        return self.value in self.written


@task(name="find-run-config", cache_policy=NO_CACHE)
def run_config(server: Server, ssh: SshSettings, profile: RuntimeProfile, run_key: str) -> RunConfig | None:
    """How run `run_key` left this server's sdk.config; None when the run has no backup of it or the file is as
    the backup holds it (nothing to undo)."""
    with remote.session(_host(server), ssh, profile, server.instance_id) as conn:
        found = config_rewrite.backups(conn, profile.config_path, run_key, ssh.io_timeout)
        if not found:
            return None
        path = remote.sftp_path(profile.config_path)
        current = remote.read_file(conn, path, ssh.io_timeout)
        if current == remote.read_file(conn, found[0], ssh.io_timeout):
            return None
        return RunConfig(
            instance_id=server.instance_id,
            path=path,
            backup=found[0],
            value=sdkconfig.get_string(current, AUTH_KEY, f"{server.instance_id}:{path}", profile.config_encoding),
            written=config_rewrite.written_values(conn, found, AUTH_KEY, ssh.io_timeout),
        )


@task(name="restore-run-backup", cache_policy=NO_CACHE)
@retrying(attempts=3, first=2.0, retry_if=remote.connection_trouble)
def restore_run_backup(
    server: Server, ssh: SshSettings, profile: RuntimeProfile, check: HealthCheck, run_key: str, timeout: float
) -> bool:
    """Put sdk.config back as it was before run `run_key` (its oldest backup of the file), restart the app and
    verify the restart; False when the file already is as it was (nothing to undo). Only over the run's own edit:
    `config_rewrite.EditedSinceRun` when authServerUrl holds a value the run did not write (set by hand since)."""
    host = _host(server)
    with remote.session(host, ssh, profile, server.instance_id) as conn:
        found = config_rewrite.backups(conn, profile.config_path, run_key, ssh.io_timeout)
        if not found:
            return False
        written = config_rewrite.written_values(conn, found, AUTH_KEY, ssh.io_timeout)
        only = (AUTH_KEY, written)
        if not config_rewrite.restore_from_backup(
            conn, profile.config_path, found[0], ssh.io_timeout, only, profile.config_encoding
        ):
            return False
        before = apps.process_identity(conn, profile)
        remote.restart(conn, profile, timeout=ssh.command_timeout)
        apps.wait_restarted(conn, profile, before, host, check.port_for(profile), check, timeout)
    return True
