"""Bench (issue 2): signed DescribeInstances per second that ONE sandbox process serves, through the real SDK.

Side by side, with the same client processes: the sandbox (`python -m sandbox serve --rate-limit 0`)
and a bare HTTP server on the same stack (uvicorn + httptools) whose trivial ASGI app answers a
fixed, well-formed DescribeInstances. For each: requests/s achieved, the server's CPU time per
request (from /proc, so the figure does not depend on how fast the clients are), and the rate
one core would sustain (1 / CPU per request). The API's overhead per request is the difference.
Then, if asked, the latency of DescribeInstances (Limit 100) as the number of instances grows.

    uv run python -m bench.api [--clients 3] [--seconds 5] [--curve 10,100,1000]
"""

import argparse
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from tencentcloud.cvm.v20170312 import cvm_client, models
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

from bench.common import (
    ROOT,
    ZONE,
    SandboxProcess,
    cpu_seconds,
    free_port,
    print_table,
    sdk_client,
    stop,
    wait_http,
    write_results,
)

TARGET_PER_CORE = 500  # signed requests/s on one core (issue 2)


# ---- the bare server: same uvicorn/httptools stack, trivial app --------------------------------------
async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the body (as the sandbox does) and answers an empty DescribeInstances."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = b'{"Response": {"TotalCount": 0, "InstanceSet": [], "RequestId": "%s"}}' % str(uuid.uuid4()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(
        bare_app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
    )


# ---- clients -------------------------------------------------------------------------------------------
def _client_loop(endpoint: str, start: Any, stop_at: Any, results: Any, limit: int) -> None:
    client = sdk_client(cvm_client.CvmClient, endpoint)
    request = models.DescribeInstancesRequest()
    request.Limit = limit
    client.DescribeInstances(request)  # warm: connection open, models imported
    start.wait()
    count, latencies = 0, []
    deadline = stop_at.value
    while (now := time.perf_counter()) < deadline:
        client.DescribeInstances(request)
        latencies.append(time.perf_counter() - now)
        count += 1
    results.put((count, latencies))


def measure(endpoint: str, server_pid: int, clients: int, seconds: float, limit: int = 20) -> dict[str, Any]:
    """Drive `endpoint` with `clients` SDK processes for `seconds`; the server's rate and CPU per request."""
    ctx = mp.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    stop_at = ctx.Value("d", 0.0)
    workers = [
        ctx.Process(target=_client_loop, args=(endpoint, start, stop_at, results, limit)) for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let every client import the SDK and warm its connection (not a readiness wait)
    cpu_before = cpu_seconds(server_pid)
    began = time.perf_counter()
    stop_at.value = began + seconds
    start.set()
    gathered = [results.get(timeout=seconds + 60) for _ in workers]
    elapsed = time.perf_counter() - began
    cpu = cpu_seconds(server_pid) - cpu_before
    for worker in workers:
        worker.join()
    total = sum(count for count, _ in gathered)
    latencies = sorted(x for _, lat in gathered for x in lat)
    cpu_per_request = cpu / total if total else float("nan")
    return {
        "requests": total,
        "requests_per_s": total / elapsed,
        "server_cpu_ms_per_request": cpu_per_request * 1000,
        "server_cpu_share": cpu / elapsed,  # 1.0 = one core busy the whole time
        "per_core_requests_per_s": 1 / cpu_per_request if total else 0.0,
        "latency_p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "latency_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
    }


# ---- instances for the curve ------------------------------------------------------------------------
def launch_instances(endpoint: str, count: int) -> None:
    """`count` CentOS servers in a VPC big enough for them (a default /24 subnet holds ~250)."""
    vpc = sdk_client(vpc_client.VpcClient, endpoint)
    create_vpc = vpc_models.CreateVpcRequest()
    create_vpc.VpcName, create_vpc.CidrBlock = "bench", "127.64.0.0/16"
    vpc_id = vpc.CreateVpc(create_vpc).Vpc.VpcId
    create_subnet = vpc_models.CreateSubnetRequest()
    create_subnet.VpcId, create_subnet.SubnetName, create_subnet.CidrBlock, create_subnet.Zone = (
        vpc_id,
        "bench",
        "127.64.0.0/20",
        ZONE,
    )
    subnet_id = vpc.CreateSubnet(create_subnet).Subnet.SubnetId
    cvm = sdk_client(cvm_client.CvmClient, endpoint)
    remaining = count
    while remaining:
        batch = min(remaining, 100)
        request = models.RunInstancesRequest()
        request.from_json_string(
            json.dumps(
                {
                    "Placement": {"Zone": ZONE},
                    "ImageId": "img-l8og963d",
                    "InstanceCount": batch,
                    "VirtualPrivateCloud": {"VpcId": vpc_id, "SubnetId": subnet_id},
                }
            )
        )
        cvm.RunInstances(request)
        remaining -= batch


def curve(sizes: list[int], seconds: float) -> list[dict[str, Any]]:
    """DescribeInstances (Limit 100) latency with N instances, one client; data plane off (API cost only)."""
    rows = []
    for size in sizes:
        port = free_port()
        code = (
            "from sandbox.core.emulated_cloud import SandboxConfig; from sandbox.server import serve; "
            f"serve(SandboxConfig(port={port}, rate_limit=0, dataplane=False))"
        )
        process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        try:
            wait_http(f"http://127.0.0.1:{port}/_sandbox/health", process)
            launch_instances(f"127.0.0.1:{port}", size)
            result = measure(f"127.0.0.1:{port}", process.pid, 1, seconds, limit=100)
            rows.append(
                {
                    "instances": size,
                    "latency_p50_ms": result["latency_p50_ms"],
                    "latency_p99_ms": result["latency_p99_ms"],
                    "server_cpu_ms_per_request": result["server_cpu_ms_per_request"],
                }
            )
        finally:
            stop(process)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=3, help="client processes (the SDK client is slow)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per server")
    parser.add_argument("--curve", default="10,100,1000", help="instance counts for the latency curve ('' = skip)")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)  # internal: run the bare server
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return

    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.api", "--serve-bare", str(bare_port)], cwd=ROOT)
    try:
        with SandboxProcess() as sandbox:
            wait_http(f"http://127.0.0.1:{bare_port}/", bare)
            # Alternate the two servers so that a noisy neighbour hurts both alike.
            runs: dict[str, list[dict[str, Any]]] = {"sandbox": [], "bare": []}
            for _ in range(2):
                runs["sandbox"].append(measure(sandbox.endpoint, sandbox.pid, args.clients, args.seconds / 2))
                runs["bare"].append(measure(f"127.0.0.1:{bare_port}", bare.pid, args.clients, args.seconds / 2))
    finally:
        stop(bare)

    summary = {name: _combine(rs) for name, rs in runs.items()}
    sandbox_row, bare_row = summary["sandbox"], summary["bare"]
    overhead_ms = sandbox_row["server_cpu_ms_per_request"] - bare_row["server_cpu_ms_per_request"]
    rows = [{"server": name, **{k: v for k, v in row.items() if k != "requests"}} for name, row in summary.items()]
    print_table(f"DescribeInstances through the real SDK, {args.clients} client processes", rows)
    comparison = {
        "achieved_rate_ratio": sandbox_row["requests_per_s"] / bare_row["requests_per_s"],
        "per_core_rate_ratio": sandbox_row["per_core_requests_per_s"] / bare_row["per_core_requests_per_s"],
        "api_overhead_ms_per_request": overhead_ms,
        "target_per_core": TARGET_PER_CORE,
        "target_met": sandbox_row["per_core_requests_per_s"] >= TARGET_PER_CORE,
    }
    print_table("sandbox vs bare server", [comparison])

    sizes = [int(x) for x in args.curve.split(",") if x.strip()]
    curve_rows = curve(sizes, min(args.seconds, 3.0)) if sizes else []
    print_table("DescribeInstances (Limit 100) latency vs instances, one client", curve_rows)
    write_results(
        "api",
        {"clients": args.clients, "seconds": args.seconds, **summary, "comparison": comparison, "curve": curve_rows},
    )


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(r["requests"] for r in runs)
    cpu_ms = sum(r["server_cpu_ms_per_request"] * r["requests"] for r in runs) / requests
    return {
        "requests": requests,
        "requests_per_s": statistics.mean(r["requests_per_s"] for r in runs),
        "server_cpu_ms_per_request": cpu_ms,
        "server_cpu_share": statistics.mean(r["server_cpu_share"] for r in runs),
        "per_core_requests_per_s": 1000 / cpu_ms,
        "latency_p50_ms": statistics.mean(r["latency_p50_ms"] for r in runs),
        "latency_p99_ms": max(r["latency_p99_ms"] for r in runs),
    }


if __name__ == "__main__":
    main()
