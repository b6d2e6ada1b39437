"""Bench (issue 9): the chatops bridge's latency, and the memory of the local stack at rest.

1. Signed chat request -> flow run created: a real Prefect server (child process, SQLite), the work pool and
   every deployment (`prefect deploy --all`, no worker: the runs stay Scheduled), the bridge (`tcscale chatops`,
   its own process). `--requests` (50) chat commands, one after the other, each a distinct message id, signed
   as a generic bot signs them (`signing.sign_generic`), alternating `scale session 1` / `scale business 1`:
   the time from sending the HTTP request to the bridge's answer carrying the run id (the bridge parses,
   checks the allowlist and whether the tier is busy, and creates the run with `timeout=0`); afterwards each
   run is read back through the API (it must exist, with the message id as its idempotency key). Also the
   bridge's CPU time per request (/proc/<pid>/stat).
2. Memory of `tcscale up` at rest: start it, wait for "ready", wait until the whole process tree is quiet
   (under 25 % of one core over 10 s: at rest it still polls), then RSS and PSS (/proc/<pid>/smaps_rollup:
   shared pages counted once) of every process of the tree, and the totals. RSS summed counts shared libraries in every
   process; PSS summed is the tree's real footprint.

    uv run python -m bench.chatops [--requests 50] [--skip-memory]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, add_port_options, cpu_seconds, free_port, print_table, stop, wait_http, write_results
from devstack.prefect_server import PrefectServer

QUIET_CPU_SHARE = 0.25  # of one core, over QUIET_WINDOW seconds
QUIET_WINDOW = 10.0
REST_WINDOW = 30.0
ALLOWLIST = {"rules": [{"users": ["bench"], "chats": ["bench-room"], "commands": ["*"]}]}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run(args: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")


# --- 1. signed chat request -> flow run created -------------------------------------------------------------


def bridge_latency(requests: int, workdir: Path, profile_to: Path | None = None) -> dict[str, Any]:
    from chatops.signing import sign_generic

    workdir.mkdir(parents=True, exist_ok=True)
    with PrefectServer(workdir / "server") as server:
        secret = secrets.token_urlsafe(24)
        port = free_port()
        env = {
            **os.environ,
            **server.client_env(),
            "PREFECT_HOME": str(workdir / "client"),
            "TCSCALE_CHATOPS_PORT": str(port),
            "TCSCALE_CHATOPS_SIGNING_SECRET": secret,
            "TCSCALE_CHATOPS_STATE_DIR": str(workdir / "chatops"),
            "TCSCALE_CHATOPS_ALLOWLIST": json.dumps(ALLOWLIST),
            # prefect.yaml's `{{ $VAR }}` job variables: empty, as for a real cloud (the runs never start here)
            **{f"TCSCALE_{name}": "" for name in ("ENDPOINT", "PROTOCOL", "CLUSTER_FILE", "GIT_REPOSITORY")},
        }
        prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
        run([*prefect, "work-pool", "create", "tcscale", "--type", "process", "--overwrite"], env, "work pool")
        run([*prefect, "deploy", "--all"], env, "prefect deploy --all")
        with (workdir / "bridge.log").open("wb") as log:
            profile = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
            bridge = subprocess.Popen(
                [sys.executable, *profile, "-m", "cli", "chatops"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", bridge, timeout=120)
            seconds, run_ids = [], []
            assert server.process is not None
            cpu_before, server_cpu_before = cpu_seconds(bridge.pid), cpu_seconds(server.process.pid)
            with httpx.Client(timeout=30) as client:
                for number in range(requests):
                    tier = ("session", "business")[number % 2]
                    message = {"message_id": f"bench-{number}", "user": "bench", "chat": "bench-room",
                               "text": f"scale {tier} 1"}  # fmt: skip
                    body = json.dumps(message).encode()
                    began = time.perf_counter()
                    headers = {"Content-Type": "application/json", **sign_generic(secret, body, int(time.time()))}
                    answer = client.post(f"{url}/chat/generic", content=body, headers=headers)
                    seconds.append(time.perf_counter() - began)
                    answer.raise_for_status()
                    run_id = answer.json().get("run_id")
                    if not run_id:
                        raise RuntimeError(f"request {number}: the bridge created no run: {answer.json()}")
                    run_ids.append(run_id)
            cpu = cpu_seconds(bridge.pid) - cpu_before
            server_cpu = cpu_seconds(server.process.pid) - server_cpu_before
        finally:
            if profile_to:  # SIGINT: cProfile writes its stats when the bridge returns
                bridge.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    bridge.wait(30)
            stop(bridge)
        found = 0
        with httpx.Client(base_url=server.api_url, timeout=10) as api:
            for number, run_id in enumerate(run_ids):
                data = api.get(f"/flow_runs/{run_id}").json()
                found += data.get("idempotency_key") == f"chat:generic:bench-{number}"
    ms = [s * 1000 for s in seconds]
    return {
        "requests": requests,
        "median_ms": statistics.median(ms),
        "p95_ms": percentile(ms, 0.95),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "bridge_cpu_ms_per_request": cpu * 1000 / requests,
        "server_cpu_ms_per_request": server_cpu * 1000 / requests,
        "runs_found": found,
    }


# --- 2. memory of the stack at rest -----------------------------------------------------------------------


def tree(root: int) -> list[int]:
    """`root` and every descendant (from /proc/<pid>/stat's parent pid)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def process_memory(pid: int) -> dict[str, Any] | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:] if line.split()[1:]}
    short = " ".join(part.rsplit("/", 1)[-1] for part in command.split()[:6])
    return {"pid": pid, "process": short[:70], "rss_mb": fields["Rss"] / 1024, "pss_mb": fields["Pss"] / 1024}


def tree_cpu(root: int) -> float:
    total = 0.0
    for pid in tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(pid)
    return total


def wait_quiet(root: int, timeout: float = 300.0) -> tuple[float, float]:
    """(seconds until quiet, the tree's CPU share of one core over the last window). Quiet: the start-up is over,
    the tree uses < QUIET_CPU_SHARE of a core over QUIET_WINDOW (a stack at rest still polls: the server's
    services, serve's runner, the bridge's results poller)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        before = tree_cpu(root)
        time.sleep(QUIET_WINDOW)  # the measurement window itself, not a stand-in for readiness
        share = (tree_cpu(root) - before) / QUIET_WINDOW
        print(f"  the stack used {share:.0%} of a core over {QUIET_WINDOW:g} s", flush=True)
        if share < QUIET_CPU_SHARE:
            return time.monotonic() - began, share
    raise TimeoutError(f"the stack did not go quiet (< {QUIET_CPU_SHARE:.0%} of a core) within {timeout:g} s")


def stack_memory(workdir: Path, ssh_port: int, app_port: int, ready_timeout: float = 300.0) -> dict[str, Any]:
    """`tcscale up` started, ready, quiet: its process tree's memory."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "up.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    began = time.monotonic()
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--workdir", str(workdir / "up"), "--ssh-port", str(ssh_port),
             "--app-port", str(app_port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        while "ready" not in log.read_text(errors="replace").splitlines():  # `tcscale up` prints "ready" last
            if up.poll() is not None:
                raise RuntimeError(f"`tcscale up` exited with {up.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() - began > ready_timeout:
                raise TimeoutError(f"`tcscale up` not ready within {ready_timeout:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        ready_s = time.monotonic() - began
        quiet_s, _ = wait_quiet(up.pid)
        before = tree_cpu(up.pid)
        time.sleep(REST_WINDOW)  # the measurement window of the CPU used at rest
        rest_share = (tree_cpu(up.pid) - before) / REST_WINDOW
        rows = [row for pid in tree(up.pid) if (row := process_memory(pid))]
    finally:
        stop(up)
    rows.sort(key=lambda r: -r["rss_mb"])
    return {
        "ready_s": ready_s,
        "quiet_after_s": quiet_s,
        "cpu_share_at_rest": rest_share,
        "processes": rows,
        "total_rss_mb": sum(r["rss_mb"] for r in rows),
        "total_pss_mb": sum(r["pss_mb"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="signed chat requests to time")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    add_port_options(parser)
    parser.add_argument("--profile-bridge", type=Path, help="run the bridge under cProfile, its stats to this file")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tcscale-bench-chatops-"))
    results: dict[str, Any] = {"load_before": load()}
    if not args.skip_latency:
        latency = bridge_latency(args.requests, workdir / "latency", args.profile_bridge)
        results["latency"] = latency
        print_table("signed chat request -> flow run created (bridge answer with the run id)", [latency])
    if not args.skip_memory:
        memory = stack_memory(workdir / "memory", args.ssh_port, args.app_port)
        results["memory"] = memory
        print_table(
            f"`tcscale up` at rest (ready after {memory['ready_s']:.1f} s, quiet {memory['quiet_after_s']:.1f} s "
            f"later, then {memory['cpu_share_at_rest']:.0%} of a core over {REST_WINDOW:g} s): its processes",
            [*memory["processes"], {"process": "total", "rss_mb": memory["total_rss_mb"],
                                    "pss_mb": memory["total_pss_mb"]}],
        )  # fmt: skip
    results["load_after"] = load()
    print(f"\nload average before {results['load_before']}, after {results['load_after']} ({os.cpu_count()} cpus)")
    write_results("chatops", results)


if __name__ == "__main__":
    main()
