"""Flows run for real: the Prefect engine (`prefect_harness`, tests/conftest.py) against the sandbox."""

from typing import Any

import pytest

from sandbox.server import EmbeddedSandbox


@pytest.fixture
def guide(cloud_env: EmbeddedSandbox, prefect_harness: None, tmp_path) -> dict[str, Any]:
    """The guide's starting point (one session server, one business server), seeded in the sandbox."""
    seeded = cloud_env.admin("POST", "seed", {"key_file": str(tmp_path / "guide.pem")})
    servers = cloud_env.admin("GET", "servers")
    seeded["known_hosts"] = [line for s in servers["servers"] for line in s["known_hosts"]]
    return seeded
