"""The deployments on a real Prefect server: `prefect deploy --all`, the lunch-peak runs the scheduler makes, `tcscale
setup` twice, a late scheduled run run by a process worker in another folder (it changes nothing), `tcscale serve`.

The tests share one deployment of prefect.yaml (module fixture) and run in this file's order: `serve` (last)
replaces the deployed deployments with served ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import Deployment, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Scheduled

from deployments.setup import run_setup
from devstack.prefect_server import PrefectServer
from flows.declaration import CLUSTER_VARIABLE
from sandbox.server import EmbeddedSandbox
from tasks.waiters import wait_until
from tests.deployments.test_prefect_yaml import DEPLOYMENTS as NAMES

ROOT = Path(__file__).resolve().parents[2]
FORMS = {  # each deployment's run form (flows/run_forms.py)
    "cluster": "ClusterScaleOutForm",
    "session-tier": "SessionScaleOutForm",
    "business-tier": "BusinessScaleOutForm",
    "cleanup": "CleanupForm",
    "autoscaling": "AutoScalingForm",
    "verify": "AutoScalingForm",
    "capacity": "CapacityForm",
    "plan": "PlanCapacityForm",
}


@pytest.fixture(scope="module")
def api(prefect_server: PrefectServer) -> Iterator[SyncPrefectClient]:
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def deployed(
    api: SyncPrefectClient, prefect_server: PrefectServer, sandbox_server: EmbeddedSandbox
) -> dict[str, Deployment]:
    """prefect.yaml deployed as an operator does: the work pool first (`run_setup`), then `prefect deploy --all`."""
    run_setup(None, {})
    env = {
        **os.environ,
        **prefect_server.client_env(),
        "TCSCALE_GIT_REPOSITORY": str(ROOT),  # the workers clone the committed code from here
        "TCSCALE_ENDPOINT": sandbox_server.endpoint,
        "TCSCALE_PROTOCOL": "http",
        "TCSCALE_CLUSTER_FILE": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {f"{d.name}": d for d in api.read_deployments()}


def flow_name(api: SyncPrefectClient, deployment: Deployment) -> str:
    return f"{api.read_flow(deployment.flow_id).name}/{deployment.name}"


def test_deploy_all_creates_every_deployment(api: SyncPrefectClient, deployed: dict[str, Deployment]) -> None:
    assert {flow_name(api, d) for d in deployed.values()} == NAMES
    for name, deployment in deployed.items():
        assert deployment.description and deployment.work_pool_name == "tcscale", name
        assert "tcscale" in deployment.tags
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.git_clone": {"id": "clone", "repository": str(ROOT)}}
        ]
        env = deployment.job_variables["env"]
        assert env["TCSCALE_PROTOCOL"] == "http" and env["TCSCALE_SECRET_KEY_BLOCK"] == "tcscale-secret-key"
        schema = deployment.parameter_openapi_schema
        assert schema["required"] == ["params"]
        form = schema["definitions"][FORMS.get(name, "CapacityForm")]
        assert all(field.get("title") for field in form["properties"].values()), name
        assert len(form["properties"]) <= 6 and "overrides" in form["properties"], name
    capacity = deployed["capacity"].parameter_openapi_schema["definitions"]["CapacityForm"]["properties"]
    assert capacity["tier"]["enum"] == ["session", "business"] and capacity["capacity"]["pattern"]
    assert capacity["late_after_minutes"]["title"] == "Late after (minutes)"
    # real changes are serialised by the tier locks, not by deployment limits (which would cancel plans too)
    assert all(deployed[name].global_concurrency_limit is None for name in ("cluster", "session-tier", "verify"))
    assert deployed["cleanup"].global_concurrency_limit.limit == 1
    assert not deployed["capacity"].schedules and deployed["capacity"].global_concurrency_limit is None


def next_utc(after: datetime, hour: int, minute: int) -> datetime:
    moment = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return moment if moment > after else moment + timedelta(days=1)


def scheduled_runs(api: SyncPrefectClient, deployment: Deployment) -> list[Any]:
    return api.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Scheduled"]))),
    )


@pytest.mark.parametrize("tier", ["session", "business"])
def test_the_scheduler_makes_the_lunch_peak_runs_at_the_right_utc_instants(
    api: SyncPrefectClient, deployed: dict[str, Deployment], tier: str
) -> None:
    deployment = deployed[f"lunch-peak-{tier}"]
    assert {(s.schedule.cron, s.schedule.timezone, s.slug) for s in deployment.schedules} == {
        ("45 10 * * *", "Asia/Shanghai", "peak-out"),
        ("0 13 * * *", "Asia/Shanghai", "peak-in"),
    }
    now = datetime.now(UTC)
    out_at, in_at = next_utc(now, 2, 45), next_utc(now, 5, 0)  # 10:45 and 13:00 Beijing time
    runs = wait_until(
        lambda: scheduled_runs(api, deployment),
        done=lambda runs: {out_at, in_at} <= {r.expected_start_time for r in runs},
        failed=lambda _: None,
        what=f"the scheduler's runs of lunch-peak-{tier}",
        timeout=90,
        max_delay=3,
    )
    for run in runs:
        utc = run.expected_start_time.astimezone(UTC)
        assert (utc.hour, utc.minute) in {(2, 45), (5, 0)}, utc
        capacity = "+2" if utc.hour == 2 else "-2"
        assert run.parameters == {"params": {"tier": tier, "capacity": capacity, "late_after_minutes": 20}}
        assert run.auto_scheduled
        # the mark set-capacity reads (lateness.schedule_slug) to skip the fixed peak under a forecast plan
        assert run.created_by and (run.created_by.type, run.created_by.display_value) == (
            "SCHEDULE", "peak-out" if utc.hour == 2 else "peak-in"
        )  # fmt: skip


SECRETS = {
    "TCSCALE_SECRET_ID": "AKIDtestsecretid0001",
    "TCSCALE_SECRET_KEY": "key-that-must-never-print-7f3a",
    "TCSCALE_CHATOPS_SIGNING_SECRET": "signing-that-must-never-print-91c2",
    "TCSCALE_CHATOPS_WECOM_ROBOT_TOKEN": "robot-token-that-must-never-print-5e0d",
}


def test_setup_twice_is_idempotent_and_never_prints_a_secret(
    api: SyncPrefectClient, deployed: dict[str, Deployment], prefect_server: PrefectServer, tmp_path: Path
) -> None:
    from prefect.blocks.system import Secret
    from prefect.variables import Variable

    ssh_key = tmp_path / "id_ed25519"
    ssh_key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nssh-key-that-must-never-print\n")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"session": {"region": "ap-shanghai", "count": 3}, "lunch_peak_by": "prefect"}))
    env = {**os.environ, **prefect_server.client_env(), **SECRETS, "TCSCALE_SSH_KEY_FILE": str(ssh_key)}
    command = [sys.executable, "-m", "cli", "setup", "--cluster", str(cluster)]
    outputs = []
    for _ in range(2):
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout + done.stderr)
    first, second = outputs
    for secret in [*SECRETS.values(), "ssh-key-that-must-never-print"]:
        assert secret not in first and secret not in second
    assert "secret block tcscale-secret-key: created (from $TCSCALE_SECRET_KEY)" in first
    assert f"secret block tcscale-ssh-key: created (from {ssh_key})" in first
    assert "secret block tcscale-wecom-robot-token: created (from $TCSCALE_CHATOPS_WECOM_ROBOT_TOKEN)" in first
    assert f"variable {CLUSTER_VARIABLE}: created from {cluster}" in first
    assert "deployment scale-out-session-tier/session-tier: parameters from the declaration: updated" in first
    assert "created" not in second and "updated" not in second
    for line in ("tcscale-secret-id: exists", "work pool tcscale (process): exists",
                 "tcscale-scale-session (1): exists", f"{CLUSTER_VARIABLE}: exists"):  # fmt: skip
        assert line in second
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
            assert Secret.load("tcscale-secret-key").get() == SECRETS["TCSCALE_SECRET_KEY"]
            assert Secret.load("tcscale-ssh-key").get() == ssh_key.read_text()
            assert Secret.load("tcscale-wecom-robot-token").get() == SECRETS["TCSCALE_CHATOPS_WECOM_ROBOT_TOKEN"]
            assert Variable.get(CLUSTER_VARIABLE) == {"session": {"region": "ap-shanghai", "count": 3}}
            assert api.read_global_concurrency_limit_by_name("tcscale-scale-business").limit == 1
        # The UI's custom-run form starts from the deployment's parameters: the declared servers to add; the rest
        # of the declaration is read when the run starts (the form sends no copy of it).
        session_tier = api.read_deployment(deployed["session-tier"].id)
        assert session_tier.parameters == {"params": {"count": 3}}
    finally:
        with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
            Variable.unset(CLUSTER_VARIABLE)  # the next tests' flows run without a declaration
        for deployment in deployed.values():
            api.update_deployment(deployment.id, DeploymentUpdate(parameters={}))


def test_a_bad_cluster_file_is_refused_naming_the_field(prefect_server: PrefectServer, tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("business:\n  runtime: cobol\n")
    env = {**os.environ, **prefect_server.client_env()}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "setup", "--cluster", str(cluster)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and str(cluster) in done.stderr and "business.runtime" in done.stderr


def make_group(client: Any, guide: dict[str, Any]) -> str:
    """A real scaling group `tcscale-session` (desired 0), so a run that was not late would change it."""
    from tencentcloud.autoscaling.v20180419.autoscaling_client import AutoscalingClient
    from tencentcloud.cvm.v20170312.cvm_client import CvmClient

    server_id = guide["session_server"]["instance_id"]
    found = client(CvmClient).call_json("DescribeInstances", {"InstanceIds": [server_id]})["Response"]
    server = found["InstanceSet"][0]
    scaling = client(AutoscalingClient)
    lc = scaling.call_json(
        "CreateLaunchConfiguration",
        {"LaunchConfigurationName": "late-test", "ImageId": server["ImageId"], "InstanceType": server["InstanceType"]},
    )["Response"]["LaunchConfigurationId"]
    request = {
        "AutoScalingGroupName": "tcscale-session",
        "LaunchConfigurationId": lc,
        "MinSize": 0,
        "MaxSize": 4,
        "DesiredCapacity": 0,
        "VpcId": server["VirtualPrivateCloud"]["VpcId"],
        "SubnetIds": [server["VirtualPrivateCloud"]["SubnetId"]],
    }
    return scaling.call_json("CreateAutoScalingGroup", request)["Response"]["AutoScalingGroupId"]


def cloud_state(sandbox: EmbeddedSandbox) -> dict[str, Any]:
    services = sandbox.admin("GET", "state")["services"]
    return {"as": services["as"], "instances": sorted(services["cvm"]["instances"])}


def test_a_late_scheduled_run_changes_nothing(
    api: SyncPrefectClient,
    deployed: dict[str, Deployment],
    prefect_server: PrefectServer,
    cloud_env: EmbeddedSandbox,
    client: Any,
    tmp_path: Path,
) -> None:
    guide = cloud_env.admin("POST", "seed", {"key_file": str(tmp_path / "guide.pem")})
    group_id = make_group(client, guide)
    before = cloud_state(cloud_env)
    scheduled_at = datetime.now(UTC) - timedelta(hours=2)  # the 10:45 run, and the worker was down since
    run = api.create_flow_run_from_deployment(
        deployed["lunch-peak-session"].id,
        parameters={"params": {"tier": "session", "capacity": "+2", "late_after_minutes": 20}},
        state=Scheduled(scheduled_time=scheduled_at),
    )
    elsewhere = tmp_path / "worker"  # a process worker in another folder: the pull step clones the code there
    elsewhere.mkdir()
    env = {**os.environ, **prefect_server.client_env()}
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "tcscale", "--run-once"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    log = done.stdout + done.stderr
    finished = api.read_flow_run(run.id)
    assert finished.state is not None and finished.state.is_completed(), log[-4000:]
    assert "git_clone" in log and "skipped: scheduled for" in log
    artifacts = api.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"set-capacity-session-{run.id}"]))
    )
    report = artifacts[0].data
    assert f"scheduled for {scheduled_at:%Y-%m-%d %H:%M:%S} UTC" in report and "min late" in report
    assert "late_after_minutes=20: nothing was changed" in report
    assert cloud_state(cloud_env) == before  # no activity, no server
    from tencentcloud.autoscaling.v20180419.autoscaling_client import AutoscalingClient

    groups = client(AutoscalingClient).call_json("DescribeAutoScalingGroups", {"AutoScalingGroupIds": [group_id]})
    assert groups["Response"]["AutoScalingGroupSet"][0]["DesiredCapacity"] == 0


def test_serve_serves_the_declared_peak_and_pauses_nothing_on_shutdown(
    api: SyncPrefectClient, deployed: dict[str, Deployment], prefect_server: PrefectServer, tmp_path: Path
) -> None:
    # Runs other tests left waiting on this shared server (chat commands with no worker) must not start when their
    # deployments are served: serve would run them, and its shutdown would wait for them.
    due = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])),
        next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=datetime.now(UTC) + timedelta(hours=1)),
    )
    for waiting in api.read_flow_runs(flow_run_filter=due, limit=200):
        api.set_flow_run_state(waiting.id, Cancelled(), force=True)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"session": {"autoscaling": {"peak": {"extra": 3, "lead_minutes": 30}}}}))
    env = {**os.environ, **prefect_server.client_env(), "TCSCALE_CLUSTER_FILE": str(cluster)}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve"], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(
            lambda: log.read_text(),
            done=lambda text: "polling for scheduled runs" in text,
            failed=lambda text: f"tcscale serve exited: {text[-2000:]}" if serve.poll() is not None else None,
            what="tcscale serve serving",
            timeout=90,
            max_delay=2,
        )
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
    output = log.read_text()
    assert "set-capacity/lunch-peak-business" in output and "scale-out-cluster/cluster" in output
    session = api.read_deployment(deployed["lunch-peak-session"].id)
    assert {s.schedule.cron for s in session.schedules} == {"30 10 * * *", "0 13 * * *"}
    out = next(s for s in session.schedules if s.slug == "peak-out")
    assert out.parameters == {"params": {"tier": "session", "capacity": "+3", "late_after_minutes": 20}}
    assert not session.paused and all(s.active for s in session.schedules)  # pause_on_shutdown=False
