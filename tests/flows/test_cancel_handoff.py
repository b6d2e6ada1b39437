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

from flows.autoscaling_steps import plan
from flows.cleanup_run import cleanup_run
from flows.run_forms import CleanupForm
from flows.shared.ledger import forget_capacity, remembered_capacities
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks import clb
from tasks.autoscaling_launch_configurations import create_launch_configuration
from tasks.cloud import call_json, clients_for
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


def start_deployment_run(deployment_id: Any, parameters: dict[str, Any]) -> tuple[Any, subprocess.Popen[bytes]]:
    """A flow run of the deployment, in its own process as a worker or `serve` starts it."""
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT__FLOW_RUN_ID": str(run.id)}
    return run, subprocess.Popen([sys.executable, "-m", "prefect.engine"], cwd=ROOT, env=env)


def handed_over(key: str) -> list[Any]:
    """The cleanup-run runs a signalled run of run key `key` created to take its undo over."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["cleanup"])))
    return [r for r in runs if f"undo-of:{key}" in r.tags]


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
    run, process = start_deployment_run(session_tier, {"params": params.model_dump(mode="json")})
    try:
        wait_for_a_fault_to_fire(sandbox, process, "the canary's restart to begin")
        cancel_like_the_runner(process)
    finally:
        if process.poll() is None:
            process.kill()
    handed = handed_over("cancelled-1")
    assert [r.idempotency_key for r in handed] == [f"undo:cancelled-1:{run.id}"], "no cleanup-run took the undo over"
    report = Artifact.get("scale-out-session-tier-cancelled-1")
    assert report is not None and f"undo handed to cleanup-run {handed[0].name}" in str(report.data)

    # the handed-over run, as the cleanup deployment runs it: it undoes everything by the marks, and reports
    cleanup_run(CleanupForm.model_validate(handed[0].parameters["params"]).parameters())
    assert inventory(sandbox) == before
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])
    assert Artifact.get("cleanup-run-cancelled-1") is not None


def operators_group(region: str, tier: str) -> asg.Group:
    """The tier's scaling group behind a CLB listener, as an earlier configure-autoscaling left it (no mark of the run
    under test)."""
    subnet = next(s for s in call_json(clients_for(region).vpc, "DescribeSubnets", {})["SubnetSet"] if s["IsDefault"])
    balancer = clb.create_load_balancer.fn(region, "operators", "OPEN", subnet["VpcId"], None, 0, {}, "operators", 30)
    listener = clb.ensure_tcp_listener.fn(region, balancer.load_balancer_id, 80, "operators", clb.HealthCheckSpec(),
                                          "/", 30)  # fmt: skip
    forward = asg.ForwardLoadBalancer(load_balancer_id=balancer.load_balancer_id, listener_id=listener.listener_id,
                                      port=80)  # fmt: skip
    lc, _ = create_launch_configuration.fn(
        region, f"lc-{tier}", {"ImageId": "img-l8og963d", "InstanceType": "S5.SMALL1"}, {}
    )  # the catalog's public CentOS
    request = {"LaunchConfigurationId": lc.launch_configuration_id, "MinSize": 0, "MaxSize": 3,
               "VpcId": subnet["VpcId"], "SubnetIds": [subnet["SubnetId"]],
               "ForwardLoadBalancers": [forward.api()]}  # fmt: skip
    group, _ = asg.create_group.fn(region, plan.group_name(tier), request, {})
    return group


CAPACITY_FLOWS = {  # flow: (deployment entrypoint, its parameters for the business tier of run key `key`)
    "set-capacity": ("flows/set_capacity.py:set_capacity",
                     lambda region, key: {"tier": "business", "capacity": "1",
                                          "business": {"region": region, "run_key": key}}),
    "verify-autoscaling": ("flows/verify_autoscaling.py:verify_autoscaling",
                           lambda region, key: {"tiers": ["business"], "run_key": key,
                                                "business": {"region": region}}),
}  # fmt: skip


@pytest.mark.parametrize("flow_name", sorted(CAPACITY_FLOWS))
def test_a_cancelled_capacity_change_hands_its_undo_to_cleanup_run(
    flow_name: str, guide: dict[str, Any], cloud_env: EmbeddedSandbox
) -> None:
    """set-capacity's change and verify-autoscaling's + 1: their undo puts the desired capacity back (after a lost
    write up to 60 s later: longer than the grace). The change is kept per run key, so a cleanup-run takes the undo
    over and puts it back."""
    sandbox, region, key = cloud_env, guide["region"], f"cancelled-{flow_name}"
    group = operators_group(region, "business")
    entrypoint, parameters = CAPACITY_FLOWS[flow_name]
    # cancelled while it waits for its scale-out's activity; its own undo would outlast the grace
    changed = sandbox.admin("POST", "faults", {"service": "as", "action": "ModifyDesiredCapacity", "count": 1,
                                               "latency_ms": 1})  # fmt: skip
    waiting = sandbox.admin("POST", "faults", {"service": "as", "action": "DescribeAutoScalingActivities",
                                               "after": changed["id"], "count": 1, "latency_ms": 2_000})  # fmt: skip
    sandbox.admin("POST", "faults", {"service": "as", "action": "ModifyDesiredCapacity", "skip": 1, "count": 1,
                                     "latency_ms": 12_000})  # fmt: skip
    deployment = deploy(flow_name, flow_name, entrypoint)
    deploy("cleanup-run", "cleanup", "flows/entrypoints.py:cleanup")
    run, process = start_deployment_run(deployment, {"params": parameters(region, key)})
    try:
        wait_for_a_fault_to_fire(sandbox, process, "the scale-out's activity to be waited for", waiting["id"])
        cancel_like_the_runner(process)
    finally:
        if process.poll() is None:
            process.kill()
    try:
        handed = handed_over(key)
        assert [r.idempotency_key for r in handed] == [f"undo:{key}:{run.id}"], "no cleanup-run took the undo over"
        form = CleanupForm.model_validate(handed[0].parameters["params"])
        assert form.restore_configs is False, f"{flow_name} rewrites no sdk.config: none to look for"
        report = Artifact.get(f"{flow_name}-{key}")
        assert report is not None and f"undo handed to cleanup-run {handed[0].name}" in str(report.data)
        assert (asg.describe_group(region, group.group_id) or pytest.fail("gone")).desired == 1

        sandbox.admin("DELETE", "faults")
        removed = cleanup_run(form.parameters())  # the handed-over run, as the cleanup deployment runs it
        assert removed.capacities_restored == [f"{group.group_id}: 1 -> 0"] and not removed.failed
        assert asg.wait_settled.fn(region, group.group_id, 60, 0.2).desired == 0
        assert remembered_capacities(key) == []
        assert Artifact.get(f"cleanup-run-{key}") is not None
    finally:
        forget_capacity(key)  # the session's Prefect server outlives this test's sandbox
