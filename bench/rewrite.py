"""Bench (issue 4): rewrite `authServerUrl` in sdk.config, restart the app and prove it, on 101 business servers.

Setup: the guide's starting point in the sandbox (its own process, ssh port 3222, port 80 served at 9281:
`--ssh-port`, `--app-port`), then 100 more business servers (node demo, pm2 app `weapp`, port 5757)
launched from an image of the seeded one through the SDK (the product's own `tasks.cvm`), tagged
`tcscale:tier=business` like it, their host keys taken from the admin API (strict host-key checking, as
in production), every app answering `GET /login`.

1. The session flow's repoint path, for real: `scale-out-session-tier` (instant profile, 1 new session
   server) with `business_servers` selecting all 101 by tag: its preflight reads every sdk.config over
   SSH; each server reaches the VIP itself (MA probe by curl over SSH); then the canary, then the other
   100 in parallel, each through the product's `tasks.business_server.repoint_server`: rewrite, restart, restart proof
   (`tasks.apps.wait_restarted`: new pm2 process, `GET /login` up, held for `HealthCheck.settle_seconds`),
   and `GET /user` with a made-up session answered with the session service's verdict (60012).
   Reported: each step from the run's own report. **Target: < 10 s** (rewrite + restart + verify of 100).
2. The same task without the Prefect engine: `repoint_server.fn` on all 101 servers, one thread each (as
   `repoint_server.map` runs them), pointing them at the session server's own address; then once more, back to
   the VIP, with `settle_seconds` 0 (what the settle window costs).

    uv run python -m bench.rewrite [--servers 100] [--ssh-port 3222] [--app-port 9281]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import add_port_options, cpu_seconds, print_table, write_results
from bench.scale_out import Sandbox, cluster_parameters, report_steps  # sets Prefect's env before Prefect loads

TARGET_SECONDS = 10.0


def launch_business_servers(sandbox: Sandbox, seed: dict[str, Any], count: int) -> list[str]:
    """`count` servers from an image of the seeded business server, placed and tagged like it."""
    from tasks import cvm

    region = seed["region"]
    (source,) = cvm.describe_servers(region, [seed["business_server"]["instance_id"]])
    tags = {"tcscale:tier": "business", "tcscale:bench": "rewrite"}
    image = cvm.create_image.fn(source, "bench-business", tags, reuse=False)
    cvm.wait_image_normal.fn(region, image, timeout=60, poll=0.2)
    ids = cvm.run_servers.fn(source, image.image_id, count, source.instance_type, "bench-business", tags, "bench-rw")
    cvm.wait_servers_running.fn(region, ids, timeout=120, poll=0.2)
    return ids


def known_hosts(sandbox: Sandbox) -> list[str]:
    """Every server's host key line, once the data plane has booted them all."""
    servers = sandbox.admin("POST", "servers/settle", timeout=300)["servers"]
    return [line for s in servers for line in s["known_hosts"]]


def apps_answering(servers: list[Any], params: Any, timeout: float = 120.0) -> None:
    """Wait until every business app answers its real route (`GET /login`: the image starts it at boot)."""
    from tasks.health import probe_app_up, wait_until_ok

    port = params.health.port_for(params.runtime_profile())
    probes = {s.instance_id: (lambda host=s.private_ip: probe_app_up(host, port, params.health)) for s in servers}
    wait_until_ok(probes, f"{len(servers)} business apps", timeout, 0.2)


def flow_path(sandbox: Sandbox, seed: dict[str, Any]) -> dict[str, Any]:
    """`scale-out-session-tier` with all business servers selected by tag: preflight, canary, then the rest."""
    from flows.parameters import ServerSelector
    from flows.scale_out import scale_out_session_tier
    from tasks.health import auth_url

    params = cluster_parameters(seed, 1, 0.2).session.model_copy(
        update={"business_servers": ServerSelector(tag_key="tcscale:tier", tag_value="business")}
    )
    sandbox_cpu, own_cpu, began = cpu_seconds(sandbox.pid), time.process_time(), time.perf_counter()
    outcome = scale_out_session_tier(params)
    total = time.perf_counter() - began
    sandbox_cpu, own_cpu = cpu_seconds(sandbox.pid) - sandbox_cpu, time.process_time() - own_cpu
    steps = report_steps(outcome.report)
    rewritten = sum(c.applied and c.changed for c in outcome.changes if c.key == "authServerUrl")

    def step(prefix: str) -> float:
        return next(s for name, s in steps if name.startswith(prefix))

    return {
        "flow_total_s": total,
        "sandbox_cpu_s": sandbox_cpu,
        "bench_cpu_s": own_cpu,
        "servers_rewritten": rewritten,
        "preflight_s": step("preflight"),
        "reach_s": step("each of the"),
        "canary_s": step("canary"),
        "rest_s": step("repoint the other"),
        "steps": steps,
        "vip_url": auth_url(outcome.vip or "", params.load_balancer.listener_port, params.health.auth_path),
    }


def direct_path(servers: list[Any], params: Any, url: str, run_key: str, sandbox_pid: int) -> dict[str, Any]:
    """The product's `repoint_server.fn` on every server at once (one thread each, as `repoint_server.map`): rewrite
    authServerUrl to `url`, restart the app, prove the restart (new process, up, held for the check's
    `settle_seconds`), and the app reaches the session service through the URL it loaded."""
    from tasks.business_server import repoint_server

    profile, check = params.runtime_profile(), params.health
    sandbox_cpu, own_cpu, began = cpu_seconds(sandbox_pid), time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        done = list(
            pool.map(
                lambda s: repoint_server.fn(s, params.ssh, profile, check, url, run_key, params.timeouts.health),
                servers,
            )
        )
    elapsed = time.perf_counter() - began
    return {
        "settle_s": check.settle_seconds,
        "sandbox_cpu_s": cpu_seconds(sandbox_pid) - sandbox_cpu,
        "bench_cpu_s": time.process_time() - own_cpu,
        "servers_rewritten": sum(d.change.applied for d in done),
        "servers_restarted_and_proven": sum(d.restarted and d.after is not None for d in done),
        "servers_reaching_session_service": sum(d.probes[-1].ok for d in done),
        "rewrite_restart_verified_s": elapsed,
    }


def repoint_curve(servers: list[Any], params: Any, urls: tuple[str, str], counts: list[int]) -> list[dict[str, Any]]:
    """Repoint time against N, as the flow's repoint step does it without the Prefect engine: connections opened by
    a preflight read of every sdk.config (one per server, `remote.pooled`), then the canary, then the other N - 1
    at once (`repoint_server.fn`, one thread each), from `urls[0]` (set untimed first) to `urls[1]`."""
    from tasks import remote
    from tasks.business_server import plan_config_change, repoint_server

    profile, check, ssh, timeout = params.runtime_profile(), params.health, params.ssh, params.timeouts.health

    quick = check.model_copy(update={"settle_seconds": 0.0})
    start_url, url = urls

    def one_round(chosen: list[Any], key: str) -> dict[str, Any]:
        with remote.pooled(), ThreadPoolExecutor(max_workers=len(chosen)) as pool:
            # untimed: every chosen server at the start URL, so that each round really changes all N
            reset = key + "-start"
            list(pool.map(lambda s: repoint_server.fn(s, ssh, profile, quick, start_url, reset, timeout), chosen))
            list(pool.map(lambda s: plan_config_change.fn(s, ssh, profile, url), chosen))  # the flow's preflight
            began = time.perf_counter()
            repoint_server.fn(chosen[0], ssh, profile, check, url, key, timeout)
            canary = time.perf_counter() - began
            rest = list(pool.map(lambda s: repoint_server.fn(s, ssh, profile, check, url, key, timeout), chosen[1:]))
            total = time.perf_counter() - began
        assert all(r.restarted and r.probes[-1].ok for r in rest), "a server was not restarted or does not reach"
        return {"servers": len(chosen), "canary_s": canary, "rest_s": total - canary, "repoint_s": total}

    return [one_round(servers[:n], f"bench-curve-{i}") for i, n in enumerate(counts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=100, help="business servers launched besides the seeded one")
    parser.add_argument("--curve", default="1,10,50,101", help="repoint time against N: the first N servers")
    add_port_options(parser)
    args = parser.parse_args()

    from tasks import cvm
    from tasks.health import auth_url

    sandbox_process = Sandbox(20, args.ssh_port, args.app_port)
    with tempfile.TemporaryDirectory(prefix="tcscale-bench-") as tmp, sandbox_process as sandbox:
        sandbox.point_product_here()
        seed = sandbox.fresh_guide(Path(tmp), "instant", 1.0)
        launch_began = time.perf_counter()
        ids = launch_business_servers(sandbox, seed, args.servers)
        seed["known_hosts"] = known_hosts(sandbox)
        params = cluster_parameters(seed, 1, 0.2).session
        business = cvm.describe_servers(seed["region"], [seed["business_server"]["instance_id"], *ids])
        apps_answering(business, params)
        launched = time.perf_counter() - launch_began
        sandbox.admin("POST", "stats/reset")
        through_flow = flow_path(sandbox, seed)
        # Back to the session server's own address (real port 80), then to the VIP again without the settle window.
        session_url = auth_url(seed["session_server"]["private_ip"], 80, params.health.auth_path)
        direct = direct_path(business, params, session_url, "bench-direct", sandbox.pid)
        no_settle = params.model_copy(update={"health": params.health.model_copy(update={"settle_seconds": 0.0})})
        unsettled = direct_path(business, no_settle, through_flow["vip_url"], "bench-direct-no-settle", sandbox.pid)
        counts = [min(int(c), len(business)) for c in args.curve.split(",") if c]
        curve = repoint_curve(business, params, (session_url, through_flow["vip_url"]), counts)
        stats = sandbox.admin("GET", "stats")

    count = len(business)
    settle = direct["settle_s"]
    print_table(
        f"rewrite authServerUrl + restart + proof on {count} business servers (launching them took {launched:.1f} s)",
        [
            {"path": "flow preflight: read + validate every sdk.config over SSH", "servers": count,
             "s": through_flow["preflight_s"]},
            {"path": "flow: each server reaches the VIP itself (curl over SSH)", "servers": count,
             "s": through_flow["reach_s"]},
            {"path": f"flow canary: rewrite + restart + proof (settle {settle:g} s) + session reached", "servers": 1,
             "s": through_flow["canary_s"]},
            {"path": "flow rest, in parallel: the same", "servers": count - 1, "s": through_flow["rest_s"]},
            {"path": "flow canary + rest", "servers": count, "s": through_flow["canary_s"] + through_flow["rest_s"]},
            {"path": f"repoint_server.fn, one thread each (settle {settle:g} s)", "servers": count,
             "s": direct["rewrite_restart_verified_s"], "sandbox_cpu_s": direct["sandbox_cpu_s"],
             "bench_cpu_s": direct["bench_cpu_s"]},
            {"path": "repoint_server.fn, one thread each (settle 0: no hold window)", "servers": count,
             "s": unsettled["rewrite_restart_verified_s"], "sandbox_cpu_s": unsettled["sandbox_cpu_s"],
             "bench_cpu_s": unsettled["bench_cpu_s"]},
            {"path": "the whole flow run (1 new session server, CLB, 101 repointed)", "servers": count,
             "s": through_flow["flow_total_s"], "sandbox_cpu_s": through_flow["sandbox_cpu_s"],
             "bench_cpu_s": through_flow["bench_cpu_s"]},
        ],
    )  # fmt: skip
    print_table("repoint time against N (canary, then the rest at once; connections kept from a preflight)", curve)
    rest = through_flow["rest_s"]
    write_results(
        "rewrite",
        {
            "servers": count,
            "launch_s": launched,
            "flow": through_flow,
            "direct": direct,
            "direct_no_settle": unsettled,
            "curve": curve,
            "api_during_flow_and_direct": stats,
            "target_s": TARGET_SECONDS,
            "flow_repoint_s": through_flow["canary_s"] + rest,
            "target_met": through_flow["canary_s"] + rest < TARGET_SECONDS,
        },
    )
    print(
        f"\nrewrite + restart + proof of {count - 1} servers (flow, after the canary): {rest:.2f} s; "
        f"of {count} (repoint_server.fn): {direct['rewrite_restart_verified_s']:.2f} s, "
        f"{unsettled['rewrite_restart_verified_s']:.2f} s without the {settle:g} s settle window "
        f"(target < {TARGET_SECONDS:g} s)"
    )


if __name__ == "__main__":
    main()
