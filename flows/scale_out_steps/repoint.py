"""The guide's step 4 (修改业务服务器配置): every business server's `authServerUrl` to the new VIP, then restart.

One canary first, proven (new process, app up and staying up, session service reached through the URL it
loaded); then the rest in parallel. Every server's undo is written down before it is touched, and nothing
is undone until every parallel repoint has finished: the flow's undo then restores them all, each only while its
authServerUrl still holds the URL the run wrote (`restore_run_backup`).
"""

from __future__ import annotations

from prefect import unmapped

from flows.parameters import TierParameters
from flows.shared.tier_run import TierRun, settle_all
from tasks import business_server
from tasks.cvm import Server
from tasks.models import RuntimeProfile


class RepointFailed(Exception):
    pass


def repoint_business_servers(
    run: TierRun[TierParameters], servers: list[Server], profile: RuntimeProfile, url: str
) -> None:
    canary, rest = servers[0], servers[1:]
    with run.step(f"canary: repoint business server {canary.instance_id} to {url}, restart, prove it"):
        _repoint_all(run, [canary], profile, url)
    if rest:
        with run.step(f"repoint the other {len(rest)} business server(s), restart, prove each"):
            _repoint_all(run, rest, profile, url)


def _repoint_all(run: TierRun[TierParameters], servers: list[Server], profile: RuntimeProfile, url: str) -> None:
    params = run.params
    for server in servers:
        run.ledger.add(
            f"{profile.config_path} of business server {server.instance_id}",
            lambda server=server: business_server.restore_run_backup(
                server, params.ssh, profile, params.health, run.key, params.timeouts.health
            ),
            f"on {server.instance_id}, if authServerUrl still is {url} (this run's), copy back the oldest "
            f"{profile.config_path}.tcscale-{run.key}-*.bak over {profile.config_path} and run "
            f"`{profile.restart_command}`; if someone set it since, keep theirs",
        )
    futures = business_server.repoint_server.map(
        servers,
        unmapped(params.ssh),
        unmapped(profile),
        unmapped(params.health),
        unmapped(url),
        unmapped(run.key),
        unmapped(params.timeouts.health),
    )
    settle_all(futures)  # every one finishes before anything is undone
    failures = []
    for server, future in zip(servers, futures, strict=True):
        try:
            done = future.result()
        except Exception as error:
            failures.append(f"{server.instance_id} ({server.private_ip}): {error}")
            continue
        run.record.changes.append(done.change)
        run.record.probes += done.probes
    if failures:
        raise RepointFailed(f"{len(failures)} of {len(servers)} business server(s) failed: " + "; ".join(failures))
