"""A second sandbox on one machine (`tcscale up` beside a test run, `sandbox serve` twice, two embedded ones):
it takes its own addresses (public pool, the seed's VPC), its own key file, and both seeded sandboxes serve at once
(SSH login with each one's key, a WeChat login on each one's business server). A taken API port is refused clearly."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest

from devstack.demo import WX_HEADERS
from devstack.prefect_server import free_port
from sandbox.core.emulated_cloud import SandboxConfig
from sandbox.server import EmbeddedSandbox
from tests.sdk import poll, strict_ssh_client


class Remote:
    """A sandbox served by another process, seen through its admin API (like EmbeddedSandbox.admin)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def admin(self, method: str, path: str, json: object = None) -> Any:
        response = httpx.request(method, f"{self.url}/_sandbox/{path}", json=json, timeout=60)
        assert response.status_code == 200, f"{method} /_sandbox/{path}: {response.status_code} {response.text}"
        return response.json()


def port_options() -> dict[str, int]:
    """The test run's own SSH / app ports when set (see tests/conftest.py), else the sandbox's defaults."""
    return {
        name: int(os.environ[var])
        for name, var in (("ssh_port", "TCSCALE_TEST_SSH_PORT"), ("app_port", "TCSCALE_TEST_APP_PORT"))
        if os.environ.get(var)
    }


def works(sandbox: Any, seeded: dict[str, Any]) -> None:
    """Root over SSH on the business server with this sandbox's key, and a WeChat login on its node demo
    (which calls the session server's mina_auth at its private address)."""
    business = seeded["business_server"]
    known_hosts = [line for s in sandbox.admin("GET", "servers")["servers"] for line in s["known_hosts"]]
    client = strict_ssh_client(known_hosts)
    key = paramiko.RSAKey.from_private_key_file(seeded["key_pair"]["private_key_file"])
    client.connect(
        business["private_ip"], seeded["ports"]["ssh"], "root", pkey=key, look_for_keys=False, allow_agent=False,
        timeout=10,
    )  # fmt: skip
    with client:
        _, stdout, _ = client.exec_command(f"cat {business['sdk_config']}", timeout=30)
        assert seeded["auth_server_url"] in stdout.read().decode()
    answer = httpx.get(f"{business['url']}/login", headers=WX_HEADERS, timeout=10).json()
    assert answer["session"]["skey"], answer


def apart(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert first["vpc"]["cidr_block"] != second["vpc"]["cidr_block"]
    assert first["key_pair"]["private_key_file"] != second["key_pair"]["private_key_file"]
    public = {first[f"{t}_server"]["public_ip"] for t in ("session", "business")}
    assert public.isdisjoint(second[f"{t}_server"]["public_ip"] for t in ("session", "business"))


def test_two_embedded_sandboxes_seed_and_serve_at_once(sandbox: EmbeddedSandbox) -> None:
    """One process, two sandboxes with the same ports (defaults: no key_file, no VPC, no public pool)."""
    config = sandbox.cloud.config
    same_ports = SandboxConfig(port=0, rate_limit=0, ssh_port=config.ssh_port, app_port=config.app_port)
    with EmbeddedSandbox(same_ports) as other:
        assert other.cloud.public_pool != sandbox.cloud.public_pool
        first, second = (s.admin("POST", "seed", {}) for s in (sandbox, other))
        apart(first, second)
        works(sandbox, first)
        works(other, second)


@pytest.fixture
def two_served(tmp_path: Path) -> Iterator[list[tuple[Remote, subprocess.Popen[bytes]]]]:
    started: list[tuple[Remote, subprocess.Popen[bytes]]] = []
    options = [f"--{name.replace('_', '-')}={value}" for name, value in port_options().items()]
    try:
        for name in ("one", "two"):
            port = free_port()
            command = [sys.executable, "-m", "sandbox", "serve", "--port", str(port), "--rate-limit", "0", *options]
            command += ["--state-dir", str(tmp_path / name)]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            remote = Remote(f"http://127.0.0.1:{port}")
            started.append((remote, process))
            poll(lambda r=remote: _up(r), what=f"sandbox {name} up", timeout=60)
        yield started
    finally:
        for _, process in started:
            process.terminate()
        for _, process in started:
            process.wait(20)


def _up(remote: Remote) -> bool:
    try:
        return httpx.get(f"{remote.url}/_sandbox/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.sandbox  # sandbox processes of its own
def test_two_serve_processes_seed_and_serve_at_once(two_served: list[tuple[Remote, subprocess.Popen[bytes]]]) -> None:
    (one, _), (two, _) = two_served
    first, second = one.admin("POST", "seed", {}), two.admin("POST", "seed", {})
    assert one.admin("GET", "health")["public_pool"] != two.admin("GET", "health")["public_pool"]
    apart(first, second)
    works(one, first)
    works(two, second)


@pytest.mark.sandbox  # sandbox processes of its own
def test_serve_on_a_taken_port_says_why() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sandbox", "serve", "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "--port" in result.stderr
