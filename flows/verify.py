"""Verification a real server passes: the real apps' own routes, probed over HTTP, and from the servers
themselves over SSH. Every probe's result goes into the run's report, failures included."""

from __future__ import annotations

from collections.abc import Callable

from prefect import unmapped

from flows.run import TierRun, wait_all
from tasks import repoint
from tasks.cvm import Server
from tasks.health import Probe, probe_app_up, probe_auth, probe_session_reach, wait_until_ok
from tasks.models import RuntimeProfile

VIP_PROBES = 3  # MA answers through the VIP; which backend served each is DescribeTargetHealth's to say


class VerificationFailed(Exception):
    pass


def until_ok(run: TierRun, probes: dict[str, Callable[[], Probe]], what: str) -> list[Probe]:
    """Probe until all are ok (a server that just booted needs a moment), recording the last result of each."""
    results: dict[str, Probe] = {}
    try:
        wait_until_ok(probes, what, run.params.timeouts.health, run.params.timeouts.poll, results)
    finally:
        run.record.probes += list(results.values())
    return list(results.values())


def session_service_through_vip(run: TierRun, url: str) -> None:
    """The VIP answers the MA protocol (a `qcloud.cam.auth` probe with a made-up session)."""
    timeout = run.params.health.timeout_seconds
    with run.step(f"the session service answers through the VIP at {url}"):
        probes = {f"{url} #{n + 1}": (lambda: probe_auth(url, timeout)) for n in range(VIP_PROBES)}
        until_ok(run, probes, "the session service through the VIP")


def business_apps(run: TierRun, servers: list[Server], profile: RuntimeProfile, what: str) -> None:
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


def business_app_through_vip(run: TierRun, vip: str) -> None:
    check, port = run.params.health, run.params.load_balancer.listener_port
    with run.step(f"the business app answers through the VIP {vip}:{port}"):
        until_ok(run, {f"{vip}:{port}": lambda: probe_app_up(vip, port, check)}, "the business app through the VIP")


def servers_reach(run: TierRun, servers: list[Server], profile: RuntimeProfile, url: str) -> None:
    """Before any config changes: every business server reaches `url` itself (a security-group gap shows here)."""
    timeout = run.params.health.timeout_seconds
    with run.step(f"each of the {len(servers)} business server(s) reaches {url} itself, over SSH"):
        futures = repoint.reach_from.map(servers, unmapped(run.params.ssh), unmapped(profile), unmapped(url),
                                         unmapped(timeout))  # fmt: skip
        wait_all(futures)
        failures = []
        for server, future in zip(servers, futures, strict=True):
            try:
                probe = future.result()
            except Exception as error:
                probe = Probe(target=f"{server.instance_id} -> {url}", ok=False, detail=f"over SSH: {error}")
            run.record.probes.append(probe)
            if not probe.ok:
                failures.append(f"{server.instance_id} ({server.private_ip}): {probe.detail}")
        if failures:
            raise VerificationFailed(
                f"{len(failures)} business server(s) cannot reach {url}, nothing was repointed: "
                + "; ".join(failures)
                + ". Check the security groups between these servers, the VIP and the session servers"
            )
