"""Issue 14 defect 6(e): `apply` of a planned `set` changes exactly what the plan showed, or nothing.

A relative `set` is pinned at plan time to the absolute target it means today (the dry run, its report and the
apply all carry that number), and `apply` refuses when the tier's desired capacity has changed since the plan
(the lunch peak's 13:00 -1 ran in between): a reviewed 2 -> 1 never becomes 1 -> 0. Through the bridge, with a
real scaling group in the sandbox and the plan's dry run executed by the real `set-capacity` flow.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import run_flow
from prefect.states import Cancelled, State

from devstack.prefect_server import PrefectServer
from flows.set_capacity import set_capacity
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks.cloud import call_json, clients_for
from tests.chatops.support import Bridge, ensure_deployments, flow_runs, prefect, run_async, settings_for
from tests.chatops.test_bridge import set_state

REGION = "ap-guangzhou"  # the bridge's default region (no cluster declaration in this test)
IMAGE = "img-l8og963d"  # the catalog's public CentOS


@pytest.fixture(scope="module")
def server(prefect_server: PrefectServer) -> PrefectServer:
    ensure_deployments(prefect_server)
    return prefect_server


def session_group(desired: int) -> asg.Group:
    """The session tier's scaling group (named as configure-autoscaling names it) at `desired` servers, made
    through the Auto Scaling API as an operator would (not through the product's tasks)."""
    api = clients_for(REGION)
    request = {"LaunchConfigurationName": "t-session-lc", "ImageId": IMAGE, "InstanceType": "S5.SMALL1"}
    lc = call_json(api.autoscaling, "CreateLaunchConfiguration", request)
    subnet = next(s for s in call_json(api.vpc, "DescribeSubnets", {})["SubnetSet"] if s["IsDefault"])
    call_json(api.autoscaling, "CreateAutoScalingGroup", {
        "AutoScalingGroupName": "tcscale-session", "LaunchConfigurationId": lc["LaunchConfigurationId"],
        "MinSize": 0, "MaxSize": 3, "DesiredCapacity": desired, "VpcId": subnet["VpcId"],
        "SubnetIds": [subnet["SubnetId"]],
    })  # fmt: skip
    group = asg.find_group(REGION, "tcscale-session")
    assert group is not None and group.desired == desired
    return group


def read_run(server: PrefectServer, run_id: str) -> FlowRun:
    async def go() -> FlowRun:
        async with get_client() as client:
            return await client.read_flow_run(uuid.UUID(run_id))

    with prefect(server):
        return run_async(go())


def execute(server: PrefectServer, run_id: str) -> tuple[State, str]:
    """Run the plan's flow run here, as a worker would (the real set-capacity flow); its state and report."""
    run = read_run(server, run_id)
    with prefect(server):
        state = run_flow(set_capacity, flow_run=run, parameters=run.parameters, return_type="state")
        result = state.result() if state.is_completed() else None
    return state, getattr(result, "report", "")


def chat_runs(server: PrefectServer) -> list[FlowRun]:
    return flow_runs(server, tags=["chat"])


def test_apply_refuses_a_set_whose_tier_changed_since_the_plan_and_applies_the_planned_target(
    cloud_env: EmbeddedSandbox, server: PrefectServer, tmp_path: Path
) -> None:
    group = session_group(desired=2)
    made: list[str] = []
    try:
        with Bridge(server, settings_for(tmp_path)) as bridge:
            planned: dict[str, Any] = bridge.say("plan set session -1", uuid.uuid4().hex).json()
            made.append(planned["run_id"])
            state, report = execute(server, planned["run_id"])
            assert state.is_completed(), state
            assert f"{group.group_id}: desired 2 -> 1" in report  # what the operator reviews

            asg.modify_desired.fn(REGION, group.group_id, 1)  # the lunch peak's 13:00 -1 runs before the apply
            before = len(chat_runs(server))
            refused = bridge.say(f"apply {planned['plan_id']}", uuid.uuid4().hex).json()
            assert "run_id" not in refused, f"the reviewed 2 -> 1 was applied at 1: {refused}"
            assert len(chat_runs(server)) == before
            text = refused["text"]
            assert "session tier" in text and "was 2" in text and "is 1 now" in text and "plan again" in text

            # planned at today's capacity: the dry run and the apply carry the absolute target the plan showed
            again = bridge.say("plan set session -1", uuid.uuid4().hex).json()
            made.append(again["run_id"])
            assert "1 -> 0" in again["text"]
            assert read_run(server, again["run_id"]).parameters == {
                "params": {"tier": "session", "capacity": "0", "dry_run": True}
            }
            state, report = execute(server, again["run_id"])
            assert state.is_completed() and f"{group.group_id}: desired 1 -> 0" in report
            applied = bridge.say(f"apply {again['plan_id']}", uuid.uuid4().hex).json()
            assert applied.get("run_id"), applied
            made.append(applied["run_id"])
            assert read_run(server, applied["run_id"]).parameters == {
                "params": {"tier": "session", "capacity": "0", "dry_run": False}
            }
    finally:
        for run_id in made:  # nothing serves set-capacity here: leave no run waiting on the shared server
            if not read_run(server, run_id).state.is_final():
                set_state(server, run_id, Cancelled())
