"""End to end: a chat command through the bridge becomes a run of the served `scale-out-session-tier` deployment
that completes against the sandbox (the cluster declaration fills what the command does not say), and its result
comes back to the bot's response_url with the report's link; then `apply` runs exactly that plan for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled

from devstack.demo import seed_declaration
from devstack.prefect_server import PrefectServer
from flows.declaration import dump_declaration
from sandbox.server import EmbeddedSandbox
from tasks.cvm import TIER_TAG, describe_servers, tag_filters
from tests.chatops.support import Bridge, ensure_deployments, prefect, receiver, run_async, settings_for

# Served as `tcscale serve` serves it (deployments/serve.py `load_flow`: a served run's process must resolve the
# parameter model, see there).
SERVE = (
    "from deployments.serve import load_flow; "
    "load_flow('flows/scale_out.py:scale_out_session_tier')"
    ".serve(name='session-tier', pause_on_shutdown=False, print_starting_message=False)"
)


def cancel_waiting_runs(server: PrefectServer, deployment: str) -> None:
    """Runs other tests left Scheduled for this deployment must not start when it is served."""

    async def go() -> None:
        async with get_client() as client:
            waiting = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING]))
                ),
            )
            for run in waiting:
                await client.set_flow_run_state(run.id, Cancelled(), force=True)

    with prefect(server):
        run_async(go())


@pytest.fixture
def served(cloud_env: EmbeddedSandbox, prefect_server: PrefectServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    ensure_deployments(prefect_server)
    cancel_waiting_runs(prefect_server, "session-tier")
    seed = cloud_env.admin("POST", "seed", {"key_file": str(tmp_path / "guide.pem")})
    servers = cloud_env.admin("GET", "servers")
    seed["known_hosts"] = [line for s in servers["servers"] for line in s["known_hosts"]]
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps(dump_declaration(seed_declaration(seed, count=1))))
    env = {**os.environ, **prefect_server.client_env(), "TCSCALE_CLUSTER_FILE": str(cluster)}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield {"seed": seed, "log": tmp_path / "serve.log"}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.mark.slow  # about 170 s on a busy 2-core machine: the plan, then a real scale-out of one server
def test_a_chat_plan_and_its_apply_complete_against_the_sandbox(
    served: dict[str, Any], prefect_server: PrefectServer, tmp_path: Path
) -> None:
    region = served["seed"]["region"]
    before = describe_servers(region, filters=tag_filters({TIER_TAG: "session"}))
    with receiver() as bot, Bridge(prefect_server, settings_for(tmp_path)) as bridge:
        planned = bridge.say("plan scale session 1", uuid.uuid4().hex, response_url=f"{bot.url}/reply").json()
        result = bot.wait_for(lambda p: p["json"].get("run_id") == planned["run_id"], timeout=240)["json"]
        assert result["state"] == "Completed", (result, served["log"].read_text()[-3000:])
        assert result["report_url"].startswith(f"{prefect_server.ui_url}/artifacts/artifact/")
        assert f"apply {planned['plan_id']}" in result["text"]
        assert len(describe_servers(region, filters=tag_filters({TIER_TAG: "session"}))) == len(before)  # a plan

        applied = bridge.say(f"apply {planned['plan_id']}", uuid.uuid4().hex, response_url=f"{bot.url}/reply").json()
        assert applied["run_id"], applied
        done = bot.wait_for(lambda p: p["json"].get("run_id") == applied["run_id"], timeout=300)["json"]
        assert done["state"] == "Completed", (done, served["log"].read_text()[-3000:])
        after = describe_servers(region, filters=tag_filters({TIER_TAG: "session"}))
        assert len([s for s in after if s.state == "RUNNING"]) == len(before) + 1
