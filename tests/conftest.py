"""Shared fixtures: one embedded sandbox per test session, reset before each test, and real SDK clients."""

import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Prefect must never touch the developer's own ~/.prefect, nor phone home.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tcscale-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


from prefect.testing.utilities import prefect_test_harness

from devstack.prefect_server import PrefectServer
from sandbox.core.cloud import SandboxConfig
from sandbox.server import EmbeddedSandbox
from tests.sdk import sdk_client


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect API (temporary SQLite database) for the session: flows, blocks, variables."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server (child process, SQLite) for the session: schedules, deployments, workers, the UI.

    In-process clients use it inside `temporary_settings(PREFECT_API_URL=prefect_server.api_url)`;
    child processes get `prefect_server.client_env()`.
    """
    with PrefectServer(tmp_path_factory.mktemp("prefect-server")) as server:
        yield server


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[EmbeddedSandbox]:
    # Throttling off for the shared sandbox; throttling tests turn it on through the admin API.
    # TCSCALE_TEST_SSH_PORT / TCSCALE_TEST_APP_PORT let two test runs share a machine.
    ports = {
        name: int(os.environ[var])
        for name, var in (("ssh_port", "TCSCALE_TEST_SSH_PORT"), ("app_port", "TCSCALE_TEST_APP_PORT"))
        if os.environ.get(var)
    }
    with EmbeddedSandbox(SandboxConfig(port=0, rate_limit=0, **ports)) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: EmbeddedSandbox) -> Iterator[EmbeddedSandbox]:
    """The shared sandbox, emptied (resources, faults, clock, rate limit) before the test."""
    sandbox_server.admin("POST", "reset")
    sandbox_server.admin("POST", "clock", {"profile": "instant", "time_scale": 1.0})
    sandbox_server.admin("POST", "config", {"rate_limit": 0})
    yield sandbox_server
    sandbox_server.admin("DELETE", "faults")


@pytest.fixture
def cloud_env(sandbox: EmbeddedSandbox, monkeypatch: pytest.MonkeyPatch) -> EmbeddedSandbox:
    """The product's configuration for the sandbox: endpoint and credentials, as an operator sets them."""
    config = sandbox.cloud.config
    monkeypatch.setenv("TCSCALE_ENDPOINT", sandbox.endpoint)
    monkeypatch.setenv("TCSCALE_PROTOCOL", "http")
    monkeypatch.setenv("TCSCALE_SECRET_ID", config.secret_id)
    monkeypatch.setenv("TCSCALE_SECRET_KEY", config.secret_key)
    return sandbox


ClientFactory = Callable[..., Any]


@pytest.fixture
def client(sandbox: EmbeddedSandbox) -> ClientFactory:
    """`client(CvmClient, region=..., method="GET")`: a real SDK client pointed at the sandbox."""
    return functools.partial(sdk_client, sandbox)


@pytest.fixture
def guide(cloud_env: EmbeddedSandbox, prefect_harness: None, tmp_path: Path) -> dict[str, Any]:
    """The guide's starting point (one session server, one business server), seeded in the sandbox."""
    seeded = cloud_env.admin("POST", "seed", {"key_file": str(tmp_path / "guide.pem")})
    servers = cloud_env.admin("GET", "servers")
    seeded["known_hosts"] = [line for s in servers["servers"] for line in s["known_hosts"]]
    return seeded
