"""Real Tencent SDK clients pointed at a sandbox (tests only)."""

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import paramiko
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from sandbox.server import EmbeddedSandbox
from tasks.ssh_keys import parse_known_hosts

REGION = "ap-guangzhou"
T = TypeVar("T")


def sdk_client(
    server: EmbeddedSandbox,
    client_class: type,
    region: str = REGION,
    method: str = "POST",
    secret_id: str | None = None,
    secret_key: str | None = None,
) -> Any:
    """`sdk_client(server, CvmClient)`: a sync or asyncio client class of the real SDK."""
    config = server.cloud.config
    cred = credential.Credential(secret_id or config.secret_id, secret_key or config.secret_key)
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=server.endpoint, reqMethod=method))
    return client_class(cred, region, profile)


def poll(read: Callable[[], T], done: Callable[[T], Any] = bool, what: str = "a condition", timeout: float = 10.0) -> T:
    """Poll a real state with backoff until `done(read())`; return that value, or fail at the deadline."""
    deadline, delay = time.monotonic() + timeout, 0.01
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {value!r}")
        time.sleep(delay)  # the pause between two polls of a real state, not a stand-in for one
        delay = min(delay * 2, 0.2)


def strict_ssh_client(known_hosts: list[str]) -> paramiko.SSHClient:
    """A paramiko client that accepts only the host keys of these known_hosts lines (RejectPolicy)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().update(parse_known_hosts(known_hosts))
    return client


def load(url: str, requests: int) -> None:
    """GET `url` `requests` times, each on a new connection (as many users' clients: a balancer spreads them), all
    answered 200. One client without keep-alive: `httpx.get` would build a client, and load the CA bundle, each time."""
    with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(requests):
            status = client.get(url).status_code
            assert status == 200, f"GET {url}: {status}"
