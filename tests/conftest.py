"""Shared fixtures: one embedded sandbox per test session, reset before each test, and real SDK clients.

Each test is marked by what it costs, from the fixtures it uses (`pytest_collection_modifyitems` below):
`unit` (no sandbox, no Prefect), `sandbox` (the shared sandbox), `flow` (the Prefect test harness: whole flows and
tasks in a flow run), `stack` (real Prefect server processes, `tcscale up`, the browser). `make check` runs
`unit or sandbox`; `make test` runs everything, in parallel (pytest-xdist), each worker with its own sandbox,
ports and PREFECT_HOME. The tests of one expensive stack share one worker (`xdist_group`, `--dist loadgroup`),
so the stack starts once per run.
"""

import functools
import os
import runpy
import shutil
import tempfile
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

# pytest-xdist: this process is worker number WORKER (0 when not under xdist). Workers inherit the controller's
# environment, so what must differ per worker is derived here, before anything reads it.
WORKER_NAME = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER = int(WORKER_NAME.removeprefix("gw")) if WORKER_NAME.startswith("gw") else 0

# Prefect must never touch the developer's own ~/.prefect, nor phone home. Under xdist each worker gets its own
# home inside the run's (its own profiles, result storage and logs).
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tcscale-prefect-"))
if WORKER_NAME:
    os.environ["PREFECT_HOME"] = str(Path(os.environ["PREFECT_HOME"]) / WORKER_NAME)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# What every Python process of the run loads at startup (tests/every_process/sitecustomize.py: Prefect lists the time
# zones once per process): the processes the tests start find it first on PYTHONPATH; this one runs it here.
EVERY_PROCESS = str(Path(__file__).parent / "every_process")
if EVERY_PROCESS not in os.environ.get("PYTHONPATH", "").split(os.pathsep):  # xdist workers inherit it
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [EVERY_PROCESS, os.environ.get("PYTHONPATH")]))
    runpy.run_path(f"{EVERY_PROCESS}/sitecustomize.py")

# The sandbox's servers listen on this run's SSH port and, for real ports below 1024, from its app port up
# (p -> app_port - 80 + p). Sandboxes side by side (two runs, xdist workers) need their own: each worker takes
# the run's ports (TCSCALE_TEST_SSH_PORT / TCSCALE_TEST_APP_PORT, else 2300 / 12080) plus its own offset.
# Everything else a sandbox holds (its public /16, the seed's private /16) it claims per process by itself.
if WORKER_NAME:
    ssh_base = int(os.environ.get("TCSCALE_TEST_SSH_PORT") or 2300)
    app_base = int(os.environ.get("TCSCALE_TEST_APP_PORT") or 12080)
    os.environ["TCSCALE_TEST_SSH_PORT"] = str(ssh_base + WORKER)
    os.environ["TCSCALE_TEST_APP_PORT"] = str(app_base + 1100 * WORKER)  # p < 1024 spans ~1000 ports

# Retries' pauses (tasks/cloud.py `retrying`) in the tests: a tenth of the product's schedule. Fault cases that
# succeed by retry still retry (the fault fires, the next attempt succeeds); they just do not wait seconds.
# tests/tasks/test_cloud.py checks the schedule itself at the product's scale.
TEST_BACKOFF_SCALE = 0.1

# Cost markers (registered in pyproject.toml), from the fixtures a test uses, most expensive first.
STACK_FIXTURES = {"prefect_server", "up_stack", "browser"}
FLOW_FIXTURES = {"prefect_harness"}
SANDBOX_FIXTURES = {"sandbox_server"}
COST_MARKERS = ("unit", "sandbox", "flow", "stack")
# Tests of one stack run on one worker (`--dist loadgroup`), which starts that stack once.
STACK_GROUPS = {"up_stack": "up-stack", "browser": "up-stack", "prefect_server": "prefect-server"}


def cost_of(item: pytest.Item) -> str:
    explicit = [name for name in COST_MARKERS if item.get_closest_marker(name)]
    if explicit:  # a test that builds its own sandbox or server says so itself
        return max(explicit, key=COST_MARKERS.index)
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & STACK_FIXTURES:
        return "stack"
    if fixtures & FLOW_FIXTURES:
        return "flow"
    if fixtures & SANDBOX_FIXTURES:
        return "sandbox"
    return "unit"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(cost_of(item))
        fixtures = set(getattr(item, "fixturenames", ()))
        group = next((STACK_GROUPS[name] for name in STACK_GROUPS if name in fixtures), None)
        if group is not None and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
    # The costliest first (a stable sort: within a cost, the files' order): the stacks and whole flows start at
    # once on their workers, and the cheap tests fill the gaps at the end, so no worker runs alone at the finish.
    items.sort(key=lambda item: -COST_MARKERS.index(cost_of(item)))


# (imported once the environment above is set: Prefect reads its settings at import)
import prefect.testing.utilities  # noqa: E402
import prefect.types._datetime  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from devstack.prefect_server import DATABASE_CACHE, PrefectServer, migrated_sqlite_database  # noqa: E402
from sandbox.core.emulated_cloud import SandboxConfig  # noqa: E402
from sandbox.server import EmbeddedSandbox  # noqa: E402
from tests.sdk import sdk_client  # noqa: E402

# Prefect lists the time zones once per process (tests/every_process/sitecustomize.py): in the processes the tests
# start, from PYTHONPATH (set above); here, loaded before Prefect took its own reference to `available_timezones`.
assert prefect.types._datetime.available_timezones is zoneinfo.available_timezones, "prefect was imported too early"


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import cloud

    monkeypatch.setattr(cloud, "BACKOFF_SCALE", TEST_BACKOFF_SCALE)


@pytest.fixture(scope="session")
def prefect_database() -> Path:
    """A migrated Prefect SQLite database that every test server starts from (shared by workers and runs)."""
    return migrated_sqlite_database(DATABASE_CACHE)


@pytest.fixture(scope="session")
def prefect_harness(prefect_database: Path) -> Iterator[None]:
    """One Prefect API (temporary SQLite database) for the session: flows, blocks, variables.

    The harness makes its database folder with `mkdtemp` and names the file prefect-test.db; handing it a folder
    that already holds the migrated database spares its server the migrations (were the name to change, the copy
    is merely unused).
    """

    def seeded_folder() -> str:
        folder = tempfile.mkdtemp()
        shutil.copyfile(prefect_database, Path(folder) / "prefect-test.db")
        return folder

    with ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(prefect.testing.utilities, "mkdtemp", seeded_folder)
            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory, prefect_database: Path) -> Iterator[PrefectServer]:
    """A real Prefect server (child process, SQLite) for the session: schedules, deployments, workers, the UI.

    In-process clients use it inside `temporary_settings(PREFECT_API_URL=prefect_server.api_url)`;
    child processes get `prefect_server.client_env()`.
    """
    with PrefectServer(tmp_path_factory.mktemp("prefect-server"), database_template=prefect_database) as server:
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
