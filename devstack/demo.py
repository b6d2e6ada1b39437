"""`tcscale demo`: the whole job on a laptop.

Starts the embedded sandbox (a local Tencent Cloud) while a Prefect server of its own starts beside it, seeds the
guide's starting point (one session server, one business server), runs `scale-out-cluster` (2 more of each), prints
each tier's report, then proves the result the way a user would: a WeChat login through the public CLB, which
reaches a business server, which reaches the session tier through the internal VIP. Then the guide's second half
(devstack/demo_peak.py).
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import typer

from devstack.prefect_server import DATABASE_CACHE, PrefectServer, sqlite_template

WX_HEADERS = {"X-WX-Code": "demo-code", "X-WX-Encrypted-Data": "demo-data", "X-WX-IV": "demo-iv"}


def prepare_environment(workdir: Path, server: PrefectServer, ui: bool = False) -> None:
    """Our own Prefect server (never the user's PREFECT_API_URL), its client state kept out of ~/.prefect.

    Without `ui` the server serves no UI and registers no block types (each start registers them all: ~1.5 s of
    CPU; the demo saves no block): it stops with the demo.
    """
    os.environ.update(server.client_env(), PREFECT_HOME=str(workdir / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if not ui:
        os.environ.update(PREFECT_UI_ENABLED="false", PREFECT_SERVER_REGISTER_BLOCKS_ON_START="false")


def start_prefect(server: PrefectServer) -> None:
    """From a copy of this Prefect's migrated database, kept with the tests' (the first server migrates, keeps it)."""
    server.database_template = sqlite_template(DATABASE_CACHE)
    server.start()


def login_through(vip: str, port: int) -> dict[str, Any]:
    url = f"http://{vip}{'' if port == 80 else f':{port}'}/login"
    response = httpx.post(url, headers=WX_HEADERS, timeout=10)
    response.raise_for_status()
    return response.json()


def run_demo(count: int = 2, workdir: Path | None = None) -> bool:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="tcscale-demo-"))
    server = PrefectServer(workdir / "prefect-server")
    prepare_environment(workdir, server)  # before Prefect is imported: it reads its settings then
    try:
        # The Prefect server starts in a child process while this one imports Prefect and the flows and starts the
        # sandbox: on two cores the two starts overlap (measured: the server is ~5 s of CPU, what the demo waits on).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefect-server") as background:
            prefect_started = background.submit(start_prefect, server)
            from prefect.settings import temporary_settings

            # No flow run heartbeats: they feed a served stack's crashed-run automation (deployments/crashes.py),
            # which the demo has not, and each synchronous flow run waits up to 1 s at its end for its heartbeat
            # thread (Prefect 3.8).
            with temporary_settings(updates={"flows.heartbeat_frequency": None}):
                return demonstrate(count, workdir, prefect_started)
    finally:
        server.stop()


def demonstrate(count: int, workdir: Path, prefect_started: Future[None]) -> bool:
    # Imported late: the sandbox is the demo's stand-in for Tencent Cloud, never a dependency of the flows.
    from sandbox.core.emulated_cloud import SandboxConfig
    from sandbox.server import EmbeddedSandbox

    echo = typer.echo
    started = time.monotonic()
    with EmbeddedSandbox(SandboxConfig(port=0, state_dir=workdir / "sandbox")) as sandbox:
        guide = seed_guide(sandbox, workdir)
        params = seed_parameters(guide, count)

        from flows.scale_out import scale_out_cluster

        prefect_started.result()  # raises what stopped the server's start
        echo(f"Prefect server: {os.environ['PREFECT_API_URL']} (log: {workdir / 'prefect-server' / 'server.log'})")
        echo(f"running scale-out-cluster: {count} more session servers, then {count} more business servers ...")
        session_outcome, business_outcome = scale_out_cluster(params)
        for outcome in (session_outcome, business_outcome):
            echo("\n" + outcome.report)

        app_port = guide["ports"]["map"]["80"]  # the business tier's listener port (real 80, where served)
        answer = login_through(business_outcome.vip or "", app_port)
        logged_in = bool(answer.get("session", {}).get("skey"))
        echo(
            f"verification: a WeChat login through the public CLB {business_outcome.vip}:{app_port} -> "
            f"business tier -> session tier via {session_outcome.vip}: "
            f"{'OK, session ' + answer['session']['id'] if logged_in else 'FAILED: ' + str(answer)}"
        )
        echo(
            f"\nscaled out: session tier {len(session_outcome.bound)} servers behind internal CLB "
            f"{session_outcome.load_balancer_id} ({session_outcome.vip}), business tier "
            f"{len(business_outcome.bound)} servers behind public CLB {business_outcome.load_balancer_id} "
            f"({business_outcome.vip}), in {time.monotonic() - started:.1f} s"
        )
        scaled = logged_in and len(session_outcome.bound) == count + 1 and len(business_outcome.bound) == count + 1
        peak = scaled and autoscale_through_lunch(sandbox, guide, count, workdir)
        echo(f"\nthe whole guide in {time.monotonic() - started:.1f} s")
        return scaled and peak


def seed_guide(sandbox: Any, workdir: Path) -> dict[str, Any]:
    """The product pointed at the sandbox (endpoint and credentials, as an operator sets them) and the guide's
    starting point seeded in it: the seed's answer plus every server's `known_hosts` lines."""
    config = sandbox.cloud.config
    os.environ.update(
        TCSCALE_ENDPOINT=sandbox.endpoint,
        TCSCALE_PROTOCOL="http",
        TCSCALE_SECRET_ID=config.secret_id,
        TCSCALE_SECRET_KEY=config.secret_key,
    )
    typer.echo(f"sandbox: Tencent Cloud API at {sandbox.url} (state in {workdir / 'sandbox'})")
    guide: Any = sandbox.admin("POST", "seed", {"key_file": str(workdir / "guide.pem")})
    servers: Any = sandbox.admin("GET", "servers")
    session, business = guide["session_server"], guide["business_server"]
    typer.echo(
        f"seeded the guide's starting point in {guide['region']} / {guide['zone']} / project "
        f"{guide['project_id']}:\n  session server  {session['instance_id']} {session['private_ip']}\n"
        f"  business server {business['instance_id']} {business['private_ip']}, authServerUrl "
        f"{guide['auth_server_url']}"
    )
    guide["known_hosts"] = [line for s in servers["servers"] for line in s["known_hosts"]]
    return guide


def autoscaling_tiers(seed: dict[str, Any], count: int) -> dict[str, Any]:
    """Each tier's Auto Scaling parameters after the scale-out: its servers found by the tier tag the scale-out put
    on them."""
    from flows.parameters import ServerSelector

    declared = seed_declaration(seed, count)
    return {
        tier: declared.tier(tier).model_copy(update={"source": ServerSelector(tag_key="tcscale:tier", tag_value=tier)})
        for tier in ("session", "business")
    }


def autoscale_through_lunch(sandbox: Any, seed: dict[str, Any], count: int, workdir: Path) -> bool:
    """configure-autoscaling on both tiers (every server of each tier attached and protected), then one lunch peak
    on the sandbox clock (devstack/demo_peak.py)."""
    from devstack.demo_peak import LunchPeak
    from flows.configure_autoscaling import configure_autoscaling
    from flows.parameters import AutoScalingClusterParameters

    tiers = autoscaling_tiers(seed, count)
    typer.echo("\nrunning configure-autoscaling: both tiers handed to Auto Scaling ...")
    outcomes = configure_autoscaling(AutoScalingClusterParameters(**tiers))
    for o in outcomes:
        peak = ", ".join(f"desired {a.desired} at {datetime.fromisoformat(a.start_time):%H:%M}" for a in o.schedule)
        typer.echo(
            f"  {o.tier} tier: scaling group {o.group_id} ({len(o.differences)} changes), its servers attached and "
            f"protected, launch to healthy {o.launch_seconds or 0:.1f} s; lunch peak: {peak}; CPU alarms"
        )
    return LunchPeak(sandbox, seed["region"], typer.echo).run(outcomes, workdir)


def seed_parameters(
    seed: dict[str, Any], count: int = 2, timeouts: Any = None, ssh: dict[str, Any] | None = None
) -> Any:
    """`scale-out-cluster` parameters for a sandbox seeded with the guide's starting point.

    `seed` is `POST /_sandbox/seed`'s answer plus `known_hosts` (from `GET /_sandbox/servers`): the
    sandbox's ports, key file and host keys are all the flows need to know; nothing else differs
    from a real cloud.
    """
    from flows.parameters import (
        BusinessTierParameters,
        ClusterParameters,
        LoadBalancerOptions,
        ServerSelector,
        SessionTierParameters,
        Timeouts,
    )
    from tasks.health import HealthCheck
    from tasks.models import SshSettings

    # Real ports everywhere (backends 80 / 5757, security-group rules); only where this machine reaches the
    # VIPs differs: the sandbox serves port 80 at `map["80"]` when it may not bind it, so the listeners use that.
    listener_port = seed["ports"]["map"]["80"]
    common: dict[str, Any] = {
        "region": seed["region"],
        "count": count,
        "load_balancer": LoadBalancerOptions(listener_port=listener_port),
        "health": HealthCheck(),
        "ssh": SshSettings(
            port=seed["ports"]["ssh"],
            key_file=seed["key_pair"]["private_key_file"],
            known_hosts=seed["known_hosts"],
            **(ssh or {}),
        ),
        "timeouts": timeouts or Timeouts(),
    }
    return ClusterParameters(
        session=SessionTierParameters(
            source=ServerSelector(instance_ids=[seed["session_server"]["instance_id"]]),
            business_servers=ServerSelector(instance_ids=[seed["business_server"]["instance_id"]]),
            **common,
        ),
        business=BusinessTierParameters(
            source=ServerSelector(instance_ids=[seed["business_server"]["instance_id"]]), **common
        ),
    )


def seed_declaration(seed: dict[str, Any], count: int = 2) -> Any:
    """The cluster declaration of a sandbox seeded with the guide's starting point (the sandbox seed's answer plus
    `known_hosts`), the same values `tcscale demo` runs with."""
    from flows.declaration import ClusterDeclaration
    from flows.parameters import BusinessAutoScalingParameters, SessionAutoScalingParameters

    cluster = seed_parameters(seed, count)
    return ClusterDeclaration(
        session=SessionAutoScalingParameters.model_validate(cluster.session.model_dump(exclude_unset=True)),
        business=BusinessAutoScalingParameters.model_validate(cluster.business.model_dump(exclude_unset=True)),
    )
