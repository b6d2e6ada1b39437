"""Bench (issue 3): the data plane of ONE sandbox process (`python -m sandbox serve`, data plane on).

1. Scale-out: seed the guide, image the session server, RunInstances 100 from the image, and time
   until every one is RUNNING (DescribeInstances) and its auth service (mina_auth, real port 80) gives a
   well-formed MA answer to the MA probe `POST /mina_auth/` on its own address (`tasks.health.probe_auth`;
   the bench lets port 80 in from anywhere for it); peak RSS of the sandbox process. Targets: < 10 s, < 500 MB.
2. SSH: median time of a full SSH handshake + public-key auth (paramiko on a TCP_NODELAY socket,
   host key verified strictly against the admin API's known_hosts).
3. Throughput: a TCP source on one server's address, read directly and through an internal CLB's
   TCP listener (registered target, VIP admitted by the security group). Target: ratio >= 0.5.
4. HTTP: MA requests (`POST /mina_auth/`) to one server's auth service, directly and through a listener
   on the port that stands for 80 (backend port 80, as the product's session tier). Same target.

    uv run python -m bench.dataplane [--servers 100] [--ssh-samples 30] [--megabytes 500]
                                     [--ssh-port 3222] [--app-port 9281]
"""

import argparse
import concurrent.futures
import contextlib
import http.client
import json
import multiprocessing as mp
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import paramiko
from tencentcloud.clb.v20180317 import clb_client
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.vpc.v20170312 import vpc_client

from bench.common import (
    ROOT,
    SandboxProcess,
    add_port_options,
    cpu_seconds,
    memory_mb,
    print_table,
    sdk_client,
    stop,
    write_results,
)
from tasks.health import AUTH_PROBE, auth_url, probe_auth
from tasks.ssh_keys import parse_known_hosts

TARGET_SECONDS, TARGET_MB, TARGET_RATIO = 10.0, 500.0, 0.5
AUTH_PORT = 80  # mina_auth's real port; the sandbox serves it at seed["ports"]["map"]["80"]
SOURCE_PORT = 9000  # the throughput source's port on the backend server (and the listener's)
CHUNK = 1024 * 1024
# Every sandbox on this machine shares 127.0.0.0/8: keep clear of the seed's default network (tests).
SEED_NETWORK = {"vpc_cidr": "127.77.0.0/16", "subnet_cidr": "127.77.3.0/24"}


def call(client: Any, action: str, params: dict[str, Any]) -> dict[str, Any]:
    return client.call_json(action, params)["Response"]


def wait_for(check: Any, what: str, timeout: float = 120.0, delay: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(delay)
    return result


# ---- 1. scale-out -------------------------------------------------------------------------------------
def all_running(cvm: Any, ids: list[str]) -> bool:
    states = []
    for start in range(0, len(ids), 100):
        answer = call(cvm, "DescribeInstances", {"InstanceIds": ids[start : start + 100], "Limit": 100})
        states += [i["InstanceState"] for i in answer["InstanceSet"]]
    return len(states) == len(ids) and all(s == "RUNNING" for s in states)


def admit_from_anywhere(sandbox: SandboxProcess, group_id: str, port: int) -> None:
    """The bench's own rule: `port` (a real port) let in from anywhere, so that the bench can ask the servers."""
    vpc = sdk_client(vpc_client.VpcClient, sandbox.endpoint)
    rule = {"Protocol": "TCP", "Port": str(port), "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}
    policies = {"SecurityGroupId": group_id, "SecurityGroupPolicySet": {"Ingress": [rule]}}
    call(vpc, "CreateSecurityGroupPolicies", policies)


def scale_out(sandbox: SandboxProcess, seed: dict[str, Any], count: int) -> tuple[dict[str, Any], list[str]]:
    cvm = sdk_client(cvm_client.CvmClient, sandbox.endpoint)
    source = seed["session_server"]["instance_id"]
    admit_from_anywhere(sandbox, seed["security_groups"]["business"], AUTH_PORT)
    image_id = call(cvm, "CreateImage", {"InstanceId": source, "ImageName": "bench-session"})["ImageId"]
    wait_for(
        lambda: call(cvm, "DescribeImages", {"ImageIds": [image_id]})["ImageSet"][0]["ImageState"] == "NORMAL",
        "the image",
    )
    _, peak_before = memory_mb(sandbox.pid)
    began = time.perf_counter()
    ids = call(
        cvm,
        "RunInstances",
        {
            "Placement": {"Zone": seed["zone"], "ProjectId": seed["project_id"]},
            "ImageId": image_id,
            "InstanceCount": count,
            "VirtualPrivateCloud": {"VpcId": seed["vpc"]["vpc_id"], "SubnetId": seed["subnet"]["subnet_id"]},
            # The business group, with port 80 let in from anywhere: the bench asks every auth service itself.
            "SecurityGroupIds": [seed["security_groups"]["business"]],
            "LoginSettings": {"KeyIds": [seed["key_pair"]["key_id"]]},
        },
    )["InstanceIdSet"]
    wait_for(lambda: all_running(cvm, ids), "every server RUNNING")
    running_at = time.perf_counter() - began
    servers = {s["instance_id"]: s for s in sandbox.admin("GET", "servers")["servers"]}
    served_at = seed["ports"]["map"][str(AUTH_PORT)]
    urls = [auth_url(servers[i]["private_ip"], served_at) for i in ids]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        pending = set(urls)
        while pending:
            order = list(pending)
            answered = {u for u, p in zip(order, pool.map(lambda u: probe_auth(u, 2.0), order), strict=True) if p.ok}
            pending -= answered
            if pending and time.perf_counter() - began > 120:
                raise TimeoutError(f"{len(pending)} auth services never answered")
    apps_up_at = time.perf_counter() - began
    rss, peak = memory_mb(sandbox.pid)
    return {
        "servers": count,
        "running_s": running_at,
        "apps_answering_s": apps_up_at,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "peak_rss_before_mb": peak_before,
        "target_s": TARGET_SECONDS,
        "target_mb": TARGET_MB,
        "target_met": apps_up_at < TARGET_SECONDS and peak < TARGET_MB,
    }, ids


# ---- 2. SSH handshake ---------------------------------------------------------------------------------
def ssh_handshakes(sandbox: SandboxProcess, seed: dict[str, Any], ids: list[str], samples: int) -> dict[str, Any]:
    servers = {s["instance_id"]: s for s in sandbox.admin("GET", "servers")["servers"]}
    host_keys = parse_known_hosts([line for server in servers.values() for line in server["known_hosts"]])
    key = paramiko.PKey.from_path(seed["key_pair"]["private_key_file"])
    port, user = seed["ports"]["ssh"], seed["users"]["linux"]
    times = []
    for n in range(samples):
        address = servers[ids[n % len(ids)]]["private_ip"]
        began = time.perf_counter()
        sock = socket.create_connection((address, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paramiko never sets it
        client = paramiko.SSHClient()
        client._host_keys = host_keys  # strict: only the admin API's known host keys
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(address, port, user, pkey=key, sock=sock, look_for_keys=False, allow_agent=False)
        times.append(time.perf_counter() - began)
        client.close()
    return {
        "samples": samples,
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": sorted(times)[int(len(times) * 0.9)] * 1000,
        "key_type": key.get_name(),
    }


# ---- 3. throughput through a listener ------------------------------------------------------------------
def serve_source(address: str, port: int) -> None:
    """A TCP source: each connection sends the number of MB it asks for ("N\\n"), then closes."""
    listener = socket.create_server((address, port), backlog=64)
    payload = memoryview(b"\0" * CHUNK)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):  # e.g. the listener's TCP health check: connect, then reset
            request = conn.makefile().readline().strip()
            for _ in range(int(request) if request.isdigit() else 0):
                conn.sendall(payload)


def fetch(address: str, port: int, megabytes: int) -> float:
    """MB/s reading `megabytes` from the source at address:port."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with socket.create_connection((address, port), timeout=30) as sock:
        began = time.perf_counter()
        sock.sendall(f"{megabytes}\n".encode())
        total = 0
        while received := sock.recv_into(view):
            total += received
        elapsed = time.perf_counter() - began
    if total != megabytes * CHUNK:
        raise RuntimeError(f"read {total} bytes of {megabytes * CHUNK}")
    return megabytes * CHUNK / elapsed / 1e6


def throughput(sandbox: SandboxProcess, seed: dict[str, Any], backend_id: str, megabytes: int) -> dict[str, Any]:
    clb = sdk_client(clb_client.ClbClient, sandbox.endpoint)
    vpc = sdk_client(vpc_client.VpcClient, sandbox.endpoint)
    servers = {s["instance_id"]: s for s in sandbox.admin("GET", "servers")["servers"]}
    backend_ip = servers[backend_id]["private_ip"]
    lb_id = call(
        clb,
        "CreateLoadBalancer",
        {"LoadBalancerType": "INTERNAL", "VpcId": seed["vpc"]["vpc_id"], "SubnetId": seed["subnet"]["subnet_id"]},
    )["LoadBalancerIds"][0]

    def lb() -> dict[str, Any]:
        return call(clb, "DescribeLoadBalancers", {"LoadBalancerIds": [lb_id]})["LoadBalancerSet"][0]

    wait_for(lambda: lb()["Status"] == 1, "the CLB")
    vip = lb()["LoadBalancerVips"][0]
    served_at = seed["ports"]["map"][str(AUTH_PORT)]
    # The TCP source: listener port = backend port. The auth service: backend port 80 (real), listener port the
    # one that stands for 80 on this machine (as the product's session tier in the sandbox: devstack/demo.py).
    ports, backend_ports = [SOURCE_PORT, served_at], [SOURCE_PORT, AUTH_PORT]
    listener = call(clb, "CreateListener", {"LoadBalancerId": lb_id, "Ports": ports, "Protocol": "TCP"})
    wait_for(lambda: call(clb, "DescribeTaskStatus", {"TaskId": listener["RequestId"]})["Status"] == 0, "listener")
    for listener_id, port in zip(listener["ListenerIds"], backend_ports, strict=True):
        target = {"InstanceId": backend_id, "Port": port, "Weight": 10}
        registered = call(
            clb, "RegisterTargets", {"LoadBalancerId": lb_id, "ListenerId": listener_id, "Targets": [target]}
        )
        wait_for(
            lambda r=registered: call(clb, "DescribeTaskStatus", {"TaskId": r["RequestId"]})["Status"] == 0, "targets"
        )
    rule = {"Protocol": "TCP", "Port": str(SOURCE_PORT), "CidrBlock": vip, "Action": "ACCEPT"}
    call(
        vpc,
        "CreateSecurityGroupPolicies",
        {"SecurityGroupId": seed["security_groups"]["business"], "SecurityGroupPolicySet": {"Ingress": [rule]}},
    )

    code = f"from bench.dataplane import serve_source; serve_source({backend_ip!r}, {SOURCE_PORT})"
    source = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert source.stdout is not None and source.stdout.readline().strip() == "ready"
        wait_for(lambda: _answers(vip, SOURCE_PORT), "the listener to reach the source", timeout=30)
        direct, balanced = [], []
        for _ in range(5):  # alternate, so that a noisy neighbour hurts both alike
            direct.append(fetch(backend_ip, SOURCE_PORT, megabytes))
            balanced.append(fetch(vip, SOURCE_PORT, megabytes))
    finally:
        stop(source)  # type: ignore[arg-type]
    ratio = statistics.median(balanced) / statistics.median(direct)
    bulk = {
        "megabytes_per_run": megabytes,
        "direct_MBps": statistics.median(direct),
        "through_clb_MBps": statistics.median(balanced),
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
    }
    # The guide's traffic: MA requests to the auth service (port 80 let in from anywhere: `scale_out`).
    direct_http = http_rate(backend_ip, served_at, sandbox.pid)
    balanced_http = http_rate(vip, served_at, sandbox.pid)
    requests = {
        "direct_requests_per_s": direct_http["requests_per_s"],
        "through_clb_requests_per_s": balanced_http["requests_per_s"],
        "ratio": balanced_http["requests_per_s"] / direct_http["requests_per_s"],
        "sandbox_cpu_us_per_request_direct": direct_http["sandbox_cpu_us_per_request"],
        "sandbox_cpu_us_per_request_through_clb": balanced_http["sandbox_cpu_us_per_request"],
        "target_ratio": TARGET_RATIO,
        "target_met": balanced_http["requests_per_s"] / direct_http["requests_per_s"] >= TARGET_RATIO,
    }
    return bulk, requests


MA_CHECK = json.dumps(AUTH_PROBE)  # the product's own MA probe (made-up alphanumeric ids: AUTH_FAIL)


def _http_worker(address: str, port: int, start: Any, stop_at: Any, results: Any) -> None:
    connection = http.client.HTTPConnection(address, port, timeout=10)  # keep-alive, as a business server's pool

    def ask() -> None:
        connection.request("POST", "/mina_auth/", MA_CHECK, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"the auth service answered {response.status}")

    ask()
    start.wait()
    count = 0
    while time.perf_counter() < stop_at.value:
        ask()
        count += 1
    results.put(count)


def http_rate(address: str, port: int, sandbox_pid: int, clients: int = 2, seconds: float = 3.0) -> dict[str, float]:
    """MA requests/s from `clients` keep-alive client processes, and the sandbox's CPU per request."""
    ctx = mp.get_context("fork")
    start, results, stop_at = ctx.Event(), ctx.Queue(), ctx.Value("d", 0.0)
    workers = [ctx.Process(target=_http_worker, args=(address, port, start, stop_at, results)) for _ in range(clients)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # let the clients connect (not a readiness wait: a warm-up)
    cpu_before, began = cpu_seconds(sandbox_pid), time.perf_counter()
    stop_at.value = began + seconds
    start.set()
    total = sum(results.get(timeout=seconds + 30) for _ in workers)
    elapsed, cpu = time.perf_counter() - began, cpu_seconds(sandbox_pid) - cpu_before
    for worker in workers:
        worker.join()
    return {"requests_per_s": total / elapsed, "sandbox_cpu_us_per_request": cpu / total * 1e6}


def _answers(address: str, port: int) -> bool:
    try:
        return fetch(address, port, 1) > 0
    except (OSError, RuntimeError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--ssh-samples", type=int, default=30)
    parser.add_argument("--megabytes", type=int, default=500, help="MB read per throughput run")
    add_port_options(parser)
    args = parser.parse_args()

    with SandboxProcess(ssh_port=args.ssh_port, app_port=args.app_port) as sandbox:
        seed = sandbox.admin("POST", "seed", SEED_NETWORK)
        rss_idle, _ = memory_mb(sandbox.pid)
        scale, ids = scale_out(sandbox, seed, args.servers)
        scale["rss_after_seed_mb"] = rss_idle
        print_table(f"{args.servers} servers from one image, RUNNING with their apps answering", [scale])
        ssh = ssh_handshakes(sandbox, seed, ids, args.ssh_samples)
        print_table("SSH handshake + public-key auth (paramiko, TCP_NODELAY, strict host keys)", [ssh])
        flow, requests = throughput(sandbox, seed, ids[0], args.megabytes)
        print_table("TCP throughput (bulk bytes): direct to a backend vs through one CLB listener", [flow])
        print_table("HTTP requests to the auth service: direct vs through the CLB listener", [requests])
    results = {"scale_out": scale, "ssh": ssh, "throughput": flow, "http_requests": requests, "args": vars(args)}
    write_results("dataplane", results)


if __name__ == "__main__":
    main()
