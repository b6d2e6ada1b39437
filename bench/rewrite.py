"""Bench (issue 4): rewrite `authServerUrl` in sdk.config and restart the app on 101 business servers.

Setup: the guide's starting point in the sandbox (its own process, ssh port 3222, app port 9281),
then 100 more business servers launched from an image of the seeded one through the SDK (the
product's own `tasks.cvm`), tagged `tcscale:tier=business` like it, their host keys taken from
the admin API (strict host-key checking, as in production).

1. The session flow's repoint path, for real: `scale-out-session-tier` (instant profile, 1 new session
   server) with `business_servers` selecting all 101 by tag: its preflight reads every sdk.config over
   SSH, then canary (1 server: rewrite, restart, verified healthy), then the other 100 in parallel.
   Reported: the canary and the rest steps from the run's own report. **Target: < 10 s** (rewrite +
   restart of 100).
2. The same path without the Prefect engine: `tasks.repoint.repoint.fn` on all 101 servers, one thread
   each (as `repoint.map` runs them), pointing them back at the session server's own address, then
   every server's health (it loaded the new authServerUrl).

    uv run python -m bench.rewrite [--servers 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import print_table, write_results
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
    """Wait until every business app answers its health check (the image starts it at boot)."""
    from tasks.health import probe_business, wait_until_ok

    probes = {s.instance_id: (lambda host=s.private_ip: probe_business(host, params.health, None)) for s in servers}
    wait_until_ok(probes, f"{len(servers)} business apps", timeout, 0.2)


def flow_path(sandbox: Sandbox, seed: dict[str, Any]) -> dict[str, Any]:
    """`scale-out-session-tier` with all business servers selected by tag: preflight, canary, then the rest."""
    from flows.parameters import ServerSelector
    from flows.scale_out import scale_out_session_tier

    params = cluster_parameters(seed, 1, 0.2).session.model_copy(
        update={"business_servers": ServerSelector(tag_key="tcscale:tier", tag_value="business")}
    )
    began = time.perf_counter()
    outcome = scale_out_session_tier(params)
    total = time.perf_counter() - began
    steps = report_steps(outcome.report)
    applied = sum(c.applied for c in outcome.changes)

    def step(prefix: str) -> float:
        return next(s for name, s in steps if name.startswith(prefix))

    return {
        "flow_total_s": total,
        "servers_rewritten": applied,
        "preflight_s": step("preflight"),
        "canary_s": step("canary"),
        "rest_s": step("repoint the other"),
        "steps": steps,
    }


def direct_path(seed: dict[str, Any], servers: list[Any], params: Any) -> dict[str, Any]:
    """`repoint.fn` on every server at once (one thread each, as `repoint.map`), then every app's health."""
    from tasks.health import auth_url, probe_business, wait_until_ok
    from tasks.repoint import repoint

    port = params.health.port
    url = auth_url(seed["session_server"]["private_ip"], port, params.health.auth_path)
    profile = params.runtime_profile()
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        changes = list(pool.map(lambda s: repoint.fn(s, params.ssh, profile, url, "bench-direct"), servers))
    rewritten = time.perf_counter() - began
    probes = {s.instance_id: (lambda host=s.private_ip: probe_business(host, params.health, url)) for s in servers}
    wait_until_ok(probes, "every business app loaded the new authServerUrl", 60, 0.1)
    verified = time.perf_counter() - began
    return {
        "servers_rewritten": sum(c.applied for c in changes),
        "rewrite_restart_s": rewritten,
        "rewrite_restart_verified_s": verified,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=100, help="business servers launched besides the seeded one")
    args = parser.parse_args()

    from tasks import cvm

    with tempfile.TemporaryDirectory(prefix="tcscale-bench-") as tmp, Sandbox(rate_limit=20) as sandbox:
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
        direct = direct_path(seed, business, params)
        stats = sandbox.admin("GET", "stats")

    count = len(business)
    print_table(
        f"rewrite authServerUrl + restart on {count} business servers (launching them took {launched:.1f} s)",
        [
            {"path": "flow preflight: read + validate every sdk.config over SSH", "servers": count,
             "s": through_flow["preflight_s"]},
            {"path": "flow canary: rewrite + restart + verified healthy", "servers": 1, "s": through_flow["canary_s"]},
            {"path": "flow rest, in parallel: rewrite + restart + verified healthy", "servers": count - 1,
             "s": through_flow["rest_s"]},
            {"path": "flow canary + rest", "servers": count, "s": through_flow["canary_s"] + through_flow["rest_s"]},
            {"path": "repoint.fn, one thread each: rewrite + restart", "servers": count,
             "s": direct["rewrite_restart_s"]},
            {"path": "repoint.fn + every app verified (new authServerUrl loaded)", "servers": count,
             "s": direct["rewrite_restart_verified_s"]},
        ],
    )  # fmt: skip
    rest = through_flow["rest_s"]
    write_results(
        "rewrite",
        {
            "servers": count,
            "launch_s": launched,
            "flow": through_flow,
            "direct": direct,
            "api_during_flow_and_direct": stats,
            "target_s": TARGET_SECONDS,
            "target_met": rest < TARGET_SECONDS and direct["rewrite_restart_s"] < TARGET_SECONDS,
        },
    )
    print(
        f"\nrewrite + restart of {count - 1} servers (flow, after the canary): {rest:.2f} s; "
        f"of {count} (repoint.fn): {direct['rewrite_restart_s']:.2f} s (target < {TARGET_SECONDS:g} s)"
    )


if __name__ == "__main__":
    main()
