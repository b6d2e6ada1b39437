"""A cancel from the UI (issue 14 defect 7): Prefect's runner sends the run's process SIGTERM, then SIGKILL 30 s
later (`prefect/runner/runner.py`, `_kill_process(grace_seconds=30)`). A real-cloud undo (terminate and wait,
delete the CLB, restore configs with a proven restart) takes longer: it was cut short, half done, with no report.
A deployment run now hands its undo to a `cleanup-run/cleanup` run at once and exits; that run undoes by the
marks and reports.

Here a real deployment run's process (`python -m prefect.engine`, as a worker or `serve` starts it) is signalled as
the runner does, with the grace scaled down, and the cloud's TerminateInstances is slower than that grace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.settings import PREFECT_API_URL

from flows.cleanup_run import cleanup_run
from flows.run_forms import CleanupForm
from sandbox.server import EmbeddedSandbox
from tests.flows.support import (
    assert_business_untouched,
    business_configs,
    inventory,
    restart_slow,
    session_params,
    wait_for_a_fault_to_fire,
)

ROOT = Path(__file__).resolve().parents[2]
GRACE = 8.0  # the runner's 30 s, scaled down with the cloud's latency


def deploy(flow_name: str, name: str, entrypoint: str) -> Any:
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow_name)
        return client.create_deployment(flow_id, name, entrypoint=entrypoint, path=str(ROOT))


def cancel_like_the_runner(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.slow  # about 40 s: a scale-out to its repoint, the grace, a slow terminate
def test_a_cancelled_deployment_run_hands_its_undo_to_cleanup_run_which_completes_it(
    guide: dict[str, Any], cloud_env: EmbeddedSandbox
) -> None:
    sandbox = cloud_env
    business = guide["business_server"]["instance_id"]
    before, configs = inventory(sandbox), business_configs(sandbox)
    sandbox.admin("POST", "faults", restart_slow(business, 3_000))  # the run is mid-repoint when cancelled
    sandbox.admin("POST", "faults", {"service": "cvm", "action": "TerminateInstances", "latency_ms": 12_000,
                                     "count": 1})  # fmt: skip
    session_tier = deploy("scale-out-session-tier", "session-tier", "flows/scale_out.py:scale_out_session_tier")
    deploy("cleanup-run", "cleanup", "flows/entrypoints.py:cleanup")
    params = session_params(guide, run_key="cancelled-1")
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            session_tier, parameters={"params": params.model_dump(mode="json")}
        )
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT__FLOW_RUN_ID": str(run.id)}
    process = subprocess.Popen([sys.executable, "-m", "prefect.engine"], cwd=ROOT, env=env)
    try:
        wait_for_a_fault_to_fire(sandbox, process, "the canary's restart to begin")
        cancel_like_the_runner(process)
    finally:
        if process.poll() is None:
            process.kill()
    with get_client(sync_client=True) as client:
        handed = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["cleanup"])))
    assert [r.idempotency_key for r in handed] == [f"undo:cancelled-1:{run.id}"], "no cleanup-run took the undo over"
    report = Artifact.get("scale-out-session-tier-cancelled-1")
    assert report is not None and f"undo handed to cleanup-run {handed[0].name}" in str(report.data)

    # the handed-over run, as the cleanup deployment runs it: it undoes everything by the marks, and reports
    cleanup_run(CleanupForm.model_validate(handed[0].parameters["params"]).parameters())
    assert inventory(sandbox) == before
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])
    assert Artifact.get("cleanup-run-cancelled-1") is not None
