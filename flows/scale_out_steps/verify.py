"""Verification a real server passes: the real apps' own routes, probed over HTTP, and from the servers
themselves over SSH. Every probe's result goes into the run's report, failures included."""

from __future__ import annotations

from collections.abc import Callable

from flows.parameters import TierParameters
from flows.shared.tier_run import TierRun
from tasks import business_server
from tasks.cvm import Server
from tasks.health import Probe, probe_app_up, probe_auth, probe_session_reach, wait_until_ok
from tasks.models import RuntimeProfile, SshSettings
from tasks.waiters import WaitTimeout

VIP_PROBES = 3  # MA answers through the VIP; which backend served each is DescribeTargetHealth's to say


class VerificationFailed(Exception):
    pass


def until_ok(run: TierRun[TierParameters], probes: dict[str, Callable[[], Probe]], what: str) -> list[Probe]:
    """Probe until all are ok (a server that just booted needs a moment), recording the last result of each."""
    results: dict[str, Probe] = {}
    try:
        wait_until_ok(probes, what, run.params.timeouts.health, run.params.timeouts.poll, results)
    finally:
        run.record.probes += list(results.values())
    return list(results.values())


def session_service_through_vip(run: TierRun[TierParameters], url: str) -> None:
    """The VIP answers the MA protocol (a `qcloud.cam.auth` probe with a made-up session)."""
    timeout = run.params.health.timeout_seconds
    with run.step(f"the session service answers through the VIP at {url}"):
        probes = {f"{url} #{n + 1}": (lambda: probe_auth(url, timeout)) for n in range(VIP_PROBES)}
        until_ok(run, probes, "the session service through the VIP")


def business_apps(run: TierRun[TierParameters], servers: list[Server], profile: RuntimeProfile, what: str) -> None:
    """Each business app answers its real login route and reaches the session service through the URL it loaded."""
    check = run.params.health
    port = check.port_for(profile)
    with run.step(what):
        probes: dict[str, Callable[[], Probe]] = {}
        for s in servers:
            probes[f"{s.instance_id} app up"] = lambda host=s.private_ip: probe_app_up(host, port, check)
            probes[f"{s.instance_id} reaches the session tier"] = lambda host=s.private_ip: probe_session_reach(
                host, port, check
            )
        until_ok(run, probes, f"{len(servers)} business app(s)")


def business_app_through_vip(run: TierRun[TierParameters], vip: str) -> None:
    check, port = run.params.health, run.params.load_balancer.listener_port
    with run.step(f"the business app answers through the VIP {vip}:{port}"):
        until_ok(run, {f"{vip}:{port}": lambda: probe_app_up(vip, port, check)}, "the business app through the VIP")


def servers_reach(run: TierRun[TierParameters], servers: list[Server], profile: RuntimeProfile, url: str) -> None:
    """Before any config changes: every business server reaches `url` itself (a security-group gap shows here),
    probed until each has or the health deadline passes, like every other check."""
    ssh, timeout = run.params.ssh, run.params.health.timeout_seconds
    probes = {s.instance_id: _reach(s, ssh, profile, url, timeout) for s in servers}
    with run.step(f"each of the {len(servers)} business server(s) reaches {url} itself, over SSH"):
        try:
            until_ok(run, probes, f"{len(servers)} business server(s) to reach {url}")
        except WaitTimeout as timed_out:
            failing = timed_out.last_state if isinstance(timed_out.last_state, dict) else {}  # {id: detail}
            raise VerificationFailed(
                f"{len(failing)} business server(s) cannot reach {url}, nothing was repointed: "
                + "; ".join(f"{k}: {v}" for k, v in failing.items())
                + ". Check the security groups between these servers, the VIP and the session servers"
            ) from None


def _reach(server: Server, ssh: SshSettings, profile: RuntimeProfile, url: str, timeout: float) -> Callable[[], Probe]:
    def probe() -> Probe:
        try:
            return business_server.reach_from.fn(server, ssh, profile, url, timeout)
        except Exception as error:  # SSH itself failed: a finding too, probed again until the deadline
            return Probe(target=f"{server.instance_id} -> {url}", ok=False, detail=f"over SSH: {error}")

    return probe
