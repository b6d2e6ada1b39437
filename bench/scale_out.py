"""Bench (issue 4): `scale-out-cluster` on the sandbox's realistic latency profile.

1. Overhead: total time of `scale-out-cluster` divided by the critical path of its dependency graph
   (`critical_path`: each tier's image + launch beside its CLB + listener, then the registration; the business
   tier beside the session tier, its new servers repointed to the session VIP, a settle window per repoint
   batch, before they are registered), each cloud wait `REALISTIC_SECONDS[op] * S`. Target <= 1.05 at every N.
   Prefect's fixed overhead is measured apart (a
   flow of the same shape whose tasks do nothing), and so is the whole flow on the instant profile
   (every cloud wait 0: what the product costs beyond the cloud's waits).
2. Scaling: the same flow as N (servers added per tier) grows 1 -> 10 -> 50 -> 100: time (target:
   N = 100 within 1.5x of N = 1) and API requests per run from `GET /_sandbox/stats` (describes
   batched: one request per poll for up to 100 servers, so <= 1 request per server per wait).

The sandbox runs in its own process (ssh port 3222, port 80 served at 9281: `--ssh-port`, `--app-port`),
on its own 127.78/16 network, with the real API's throttling (20 requests/s per action). Flows run in
Prefect's ephemeral mode (a temporary PREFECT_HOME). The product's poll interval (`Timeouts.poll`, 2 s
against the real cloud) is scaled by S like every cloud latency, so polling is as coarse relative to the
waits as for real.

    uv run python -m bench.scale_out [--scale 0.1] [--counts 1,10,50,100]
"""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported: never the developer's ~/.prefect, never phone home.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tcscale-bench-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import argparse
import math
import re
import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from bench.common import APP_PORT, SSH_PORT, SandboxProcess, add_port_options, print_table, write_results
from sandbox.core.clock import REALISTIC_SECONDS
from sandbox.core.emulated_cloud import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY

SEED_NETWORK = {"vpc_cidr": "127.78.0.0/16", "subnet_cidr": "127.78.3.0/24"}  # clear of tests and bench.dataplane
TARGET_RATIO, TARGET_GROWTH = 1.05, 1.5
REAL_POLL_SECONDS = 2.0  # Timeouts.poll's default against the real cloud
REGISTER_BATCH = 20  # RegisterTargets takes at most 20 targets a call (one CLB task each)


class Sandbox(SandboxProcess):
    """The sandbox in its own process (the flow's process must not share its GIL), data plane on."""

    def __init__(self, rate_limit: int = 20, ssh_port: int = SSH_PORT, app_port: int = APP_PORT) -> None:
        super().__init__(rate_limit=rate_limit, ssh_port=ssh_port, app_port=app_port)

    def point_product_here(self) -> None:
        """The product's configuration for this cloud, as an operator sets it (env vars)."""
        os.environ["TCSCALE_ENDPOINT"] = self.endpoint
        os.environ["TCSCALE_PROTOCOL"] = "http"
        os.environ["TCSCALE_SECRET_ID"] = DEFAULT_SECRET_ID
        os.environ["TCSCALE_SECRET_KEY"] = DEFAULT_SECRET_KEY

    def fresh_guide(self, key_dir: Path, profile: str, scale: float) -> dict[str, Any]:
        """Empty cloud, the guide's starting point seeded (instantly), then the latency profile, counters zeroed."""
        self.admin("POST", "reset")
        self.admin("POST", "clock", {"profile": "instant", "time_scale": 1.0})
        seeded = self.admin("POST", "seed", {"key_file": str(key_dir / "guide.pem"), **SEED_NETWORK})
        servers = self.admin("GET", "servers")["servers"]
        seeded["known_hosts"] = [line for s in servers for line in s["known_hosts"]]
        self.admin("POST", "clock", {"profile": profile, "time_scale": scale})
        self.admin("POST", "stats/reset")
        return seeded


def cluster_parameters(seed: dict[str, Any], count: int, poll: float) -> Any:
    from devstack.demo import seed_parameters
    from flows.parameters import Timeouts
    from tasks.models import HostKeyPolicy

    # tofu: the run SSHes into the business servers it launches (their host keys are new), so the business tier
    # runs beside the session tier; the seeded servers' keys are still checked strictly (their known_hosts lines)
    ssh = {"host_key_policy": HostKeyPolicy.tofu, "tofu_variable": f"tcscale-bench-host-keys-{time.time_ns()}"}
    return seed_parameters(seed, count, Timeouts(image=600, launch=600, clb=300, health=300, poll=poll), ssh)


def critical_path(count: int, scale: float, settle: float) -> dict[str, float]:
    """The longest path through the run's dependency graph (seconds), each node a wait: the cloud's
    (`REALISTIC_SECONDS[op] * scale`) or a restart's settle window. The business tier runs beside the session tier.

    Per tier: the image and the servers booting (image -> launch) beside the CLB and its listener (clb -> task); then
    the servers registered (old + new, 20 a task, one CLB's tasks in sequence). The session VIP then serves; the old
    business server is repointed (a canary: one settle window). The business tier's new servers wait for the VIP,
    are repointed (canary, then the rest: a settle window each), then registered."""

    def wait(op: str, times: int = 1) -> float:
        return times * REALISTIC_SECONDS[op] * scale

    register = wait("clb.task", math.ceil((count + 1) / REGISTER_BATCH))
    servers, balancer = wait("image.create") + wait("instance.launch"), wait("clb.create") + wait("clb.task")
    vip = max(servers, balancer) + register
    session_done = vip + settle  # the old business server: the canary, alone
    repoint_new = settle * (2 if count > 1 else 1)  # canary, then the other new servers together
    business_done = max(servers, balancer, vip) + repoint_new + register
    return {
        "image.create + instance.launch": servers,
        "register (session)": register,
        "settle (new business servers)": repoint_new,
        "register (business)": register,
        "path": max(session_done, business_done),
    }


_STEP_ROW = re.compile(r"^\| (?P<name>.+) \| (?P<outcome>\w+) \| (?P<seconds>[0-9.]+) \|$")


def report_steps(report: str) -> list[tuple[str, float]]:
    """(step, seconds) from the '## Steps' table of a run's markdown report."""
    steps = report.split("## Steps", 1)[-1]
    return [(m["name"], float(m["seconds"])) for line in steps.splitlines() if (m := _STEP_ROW.match(line))]


def run_cluster(sandbox: Sandbox, key_dir: Path, count: int, profile: str, scale: float) -> dict[str, Any]:
    from flows.scale_out import scale_out_cluster

    seed = sandbox.fresh_guide(key_dir, profile, scale)
    poll = REAL_POLL_SECONDS * scale if profile == "realistic" else REAL_POLL_SECONDS
    params = cluster_parameters(seed, count, poll)
    began = time.perf_counter()
    outcomes = scale_out_cluster(params)
    total = time.perf_counter() - began
    stats = sandbox.admin("GET", "stats")
    assert all(len(o.new_instance_ids) == count for o in outcomes), "the run did not launch what it was asked"
    waits = critical_path(count, scale, params.business.health.settle_seconds) if profile == "realistic" else {}
    return {
        "count": count,
        "profile": profile,
        "time_scale": scale,
        "total_s": total,
        "critical_path_s": waits.get("path", 0.0),
        "critical_path": waits,
        "steps": {o.tier: report_steps(o.report) for o in outcomes},
        "api": stats,
    }


# ---- Prefect's fixed overhead: a flow of the same shape whose tasks do nothing ------------------------
@task
def nothing(_: int = 0) -> None:
    return None


@flow
def tier_shaped(steps: int) -> None:
    from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

    progress = create_progress_artifact(0.0, description="bench")
    for step in range(steps):
        nothing(step)
        update_progress_artifact(progress, 100.0 * (step + 1) / steps)
    [f.result() for f in nothing.map(range(2))]
    create_markdown_artifact("# bench", description="bench")


@flow
def cluster_shaped() -> None:
    tier_shaped(12)
    tier_shaped(12)


def prefect_overhead(samples: int = 3) -> float:
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        cluster_shaped()
        times.append(time.perf_counter() - began)
    return min(times)


# ---- the report --------------------------------------------------------------------------------------
def requests_row(run: dict[str, Any]) -> dict[str, Any]:
    api = run["api"]["requests"]
    cvm, clb = api.get("cvm", {}), api.get("clb", {})
    count = run["count"]
    servers = 2 * (count + 1)  # old and new, both tiers
    return {
        "N": count,
        "requests": run["api"]["total"],
        "DescribeInstances": cvm.get("DescribeInstances", 0),
        "DescribeImages": cvm.get("DescribeImages", 0),
        "DescribeTaskStatus": clb.get("DescribeTaskStatus", 0),
        "DescribeTargetHealth": clb.get("DescribeTargetHealth", 0),
        "RegisterTargets": clb.get("RegisterTargets", 0),
        "per_server": run["api"]["total"] / servers,
        "errors": ", ".join(f"{k} x{v}" for k, v in run["api"]["errors"].items()) or "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="time scale S of the realistic profile")
    parser.add_argument("--counts", default="1,10,50,100", help="servers added per tier, one run each")
    parser.add_argument("--rate-limit", type=int, default=20, help="the sandbox's requests/s per action")
    add_port_options(parser)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c]
    scale = args.scale

    sandbox_process = Sandbox(args.rate_limit, args.ssh_port, args.app_port)
    with tempfile.TemporaryDirectory(prefix="tcscale-bench-") as tmp, sandbox_process as sandbox:
        key_dir = Path(tmp)
        sandbox.point_product_here()
        cluster_shaped()  # warm-up: the ephemeral Prefect server starts (migrations), imports load
        overhead = prefect_overhead()
        warm = run_cluster(sandbox, key_dir, 1, "instant", 1.0)  # warm-up of the product's own paths
        instant = run_cluster(sandbox, key_dir, 1, "instant", 1.0)
        runs = [run_cluster(sandbox, key_dir, n, "realistic", scale) for n in counts]

    baseline = next((r for r in runs if r["count"] == 1), runs[0])
    ratio = baseline["total_s"] / baseline["critical_path_s"]
    print_table(
        f"scale-out-cluster, realistic profile S={scale:g} (poll {REAL_POLL_SECONDS * scale:g} s)",
        [
            {
                "N": r["count"],
                "total_s": r["total_s"],
                "critical_path_s": r["critical_path_s"],
                "beyond_waits_s": r["total_s"] - r["critical_path_s"],
                "in_steps_s": (steps := sum(sec for tier in r["steps"].values() for _, sec in tier)),
                "steps/critical": steps / r["critical_path_s"],
                "total/critical": r["total_s"] / r["critical_path_s"],
                f"vs N={baseline['count']}": r["total_s"] / baseline["total_s"],
            }
            for r in runs
        ],
    )
    print_table(
        "fixed costs",
        [
            {"what": "Prefect: a cluster-shaped flow of no-op tasks (2 subflows, 26 tasks, artifacts)", "s": overhead},
            {"what": "scale-out-cluster N=1 on the instant profile (every cloud wait 0)", "s": instant["total_s"]},
        ],
    )
    print_table(
        "API requests per run (both tiers; per_server: over old + new servers)", [requests_row(r) for r in runs]
    )
    for run in runs[:1] + runs[-1:]:
        rows = [{"tier": t, "step": n[:90], "s": s} for t, steps in run["steps"].items() for n, s in steps]
        print_table(f"steps of the N={run['count']} run", rows)

    largest = runs[-1]
    growth = largest["total_s"] / baseline["total_s"]
    write_results(
        "scale_out",
        {
            "time_scale": scale,
            "poll_s": REAL_POLL_SECONDS * scale,
            "prefect_overhead_s": overhead,
            "instant_n1": instant,
            "instant_warmup_s": warm["total_s"],
            "runs": runs,
            "ratio_n1": ratio,
            "target_ratio": TARGET_RATIO,
            "ratio_met": ratio <= TARGET_RATIO,
            "ratios": {r["count"]: r["total_s"] / r["critical_path_s"] for r in runs},
            "ratios_met": all(r["total_s"] / r["critical_path_s"] <= TARGET_RATIO for r in runs),
            "growth": growth,
            "growth_of_n": largest["count"],
            "target_growth": TARGET_GROWTH,
            "growth_met": growth <= TARGET_GROWTH,
        },
    )
    print(
        f"\ntotal/critical at N=1: {ratio:.3f} (target <= {TARGET_RATIO}); "
        f"N={largest['count']} / N=1: {growth:.2f} (target <= {TARGET_GROWTH})"
    )


if __name__ == "__main__":
    main()
