"""A power cut in mid-run (issue 14 defect 8): every process of the stack killed, the Prefect server started again
on its database. Without help the killed run stayed Running for ever (the bridge answered "busy" about it, nothing
cleaned it up). With `tcscale setup`'s automations it is marked Crashed once its heartbeats stop, and a
cleanup-run of its run key is started at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, RunDeployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled

from deployments import crashes
from deployments.setup import run_setup
from devstack.prefect_server import PrefectServer
from flows.run_forms import CleanupForm
from tasks.waiters import WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT = 30  # Prefect's shortest
WINDOW = timedelta(seconds=45)  # the product waits crashes.zombie_window(); the test need not
FINISHED = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED}  # final, but not what the automation sets


def test_heartbeats_are_on_wherever_tcscale_runs_start() -> None:
    from deployments.serve import deployment_specs

    for spec in deployment_specs():  # prefect.yaml: the process workers' job variables
        env = spec["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(crashes.HEARTBEAT_SECONDS), spec["name"]
    assert crashes.heartbeat_env() == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(crashes.HEARTBEAT_SECONDS)}
    assert crashes.zombie_window() > timedelta(seconds=2 * crashes.HEARTBEAT_SECONDS)


def test_the_automations_are_valid_for_the_prefect_server() -> None:
    """What setup sends, read by the server's own models (their validators refuse, e.g., a run-deployment action
    that a flow run state change could loop on)."""
    from prefect.server.events.schemas.automations import AutomationCore as ServerAutomation

    zombies = ServerAutomation.model_validate(crashes.crash_zombies().model_dump(mode="json"))
    assert zombies.trigger.posture == "Proactive" and zombies.trigger.after == {"prefect.flow-run.heartbeat"}
    assert "prefect.flow-run.Completed" in zombies.trigger.expect and zombies.trigger.within == crashes.zombie_window()
    assert zombies.trigger.for_each == {"prefect.resource.id"}
    related = zombies.trigger.match_related
    assert not isinstance(related, list) and set(related["prefect.resource.name"]) == {
        "scale-out-cluster", "scale-out-session-tier", "scale-out-business-tier", "cleanup-run",
        "configure-autoscaling", "verify-autoscaling", "set-capacity", "plan-capacity",
    }  # fmt: skip
    (crash,) = zombies.actions
    assert crash.type == "change-flow-run-state" and crash.state == StateType.CRASHED

    cleanup = ServerAutomation.model_validate(crashes.clean_up_crashed(UUID(int=7)).model_dump(mode="json"))
    assert cleanup.trigger.posture == "Proactive" and cleanup.trigger.within == crashes.zombie_window()
    assert cleanup.trigger.match_related[1].root == {"prefect.resource.role": "deployment"}  # deployment runs only
    (run,) = cleanup.actions
    assert run.type == "run-deployment" and run.deployment_id == UUID(int=7)
    assert run.parameters == {"params": {"run_key": crashes.RUN_KEY_TEMPLATE}}
    assert "cleanup-run" not in cleanup.trigger.match_related[0]["prefect.resource.name"]  # no loop


def test_the_cleanup_gets_the_dead_runs_run_key() -> None:
    """The action's parameters, rendered as Prefect's server renders them: the run's `params.run_key`, else its id."""
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import register_user_template_filters
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    register_user_template_filters(all_filters)
    (action,) = crashes.clean_up_crashed(UUID(int=7)).actions
    run_id = UUID(int=42)
    for parameters, key in (({"params": {"run_key": "killed-1"}}, "killed-1"), ({"params": {}}, str(run_id)),
                            ({"params": {"run_key": ""}}, str(run_id)),  # the run form's empty key
                            ({"params": {"run_key": None}}, str(run_id))):  # fmt: skip
        flow_run = SimpleNamespace(id=run_id, parameters=parameters)
        context = HydrationContext(render_jinja=True, jinja_context={"flow_run": flow_run}, raise_on_error=True)
        rendered = hydrate(action.parameters, context)
        assert rendered == {"params": {"run_key": key}}
        assert CleanupForm.model_validate(rendered["params"]).parameters().run_key == key  # cleanup's run form


def test_every_flow_whose_run_can_leave_a_change_is_handed_to_cleanup_run() -> None:
    """A dead verify-autoscaling leaves its + 1, a dead set-capacity its unchecked capacity: both are kept per run key
    (tcscale-capacity-<key>), and cleanup-run puts them back only while the group still desires what the run wrote,
    as their own undo does on a failure; plan-capacity's schedule changes are kept per run key too
    (tcscale-plan-<key>-<n>). Only cleanup-run (idempotent: run again by hand) is not handed over."""
    from prefect.server.events.schemas.automations import AutomationCore as ServerAutomation

    cleanup = ServerAutomation.model_validate(crashes.clean_up_crashed(UUID(int=7)).model_dump(mode="json"))
    handed = set(cleanup.trigger.match_related[0]["prefect.resource.name"])
    assert handed == set(crashes.tcscale_flows()) - {"cleanup-run"}


def test_a_dead_set_capacity_is_cleaned_up_under_its_run_key() -> None:
    """set-capacity keeps its run key in the chosen tier's parameters (`params.business.run_key`), else its flow run
    id is the key: the cleanup gets the same."""
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import register_user_template_filters
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    register_user_template_filters(all_filters)
    (action,) = crashes.clean_up_crashed(UUID(int=7)).actions
    run_id = UUID(int=42)
    peak = {"tier": "business", "capacity": "+1"}
    for params, key in (({**peak, "business": {"run_key": "peak-1"}}, "peak-1"), (peak, str(run_id)),
                        ({**peak, "session": {"run_key": "other"}}, str(run_id)),  # the other tier's block
                        ({**peak, "business": {"run_key": None}}, str(run_id))):  # fmt: skip
        flow_run = SimpleNamespace(id=run_id, parameters={"params": params})
        context = HydrationContext(render_jinja=True, jinja_context={"flow_run": flow_run}, raise_on_error=True)
        assert hydrate(action.parameters, context) == {"params": {"run_key": key}}


# --- on a real server, killed and started again ------------------------------------------------------------


def events(server: PrefectServer, event_filter: dict[str, Any]) -> list[dict[str, Any]]:
    answer = httpx.post(f"{server.api_url}/events/filter", json={"filter": event_filter, "limit": 50}, timeout=10)
    answer.raise_for_status()
    return list(answer.json()["events"])


def heartbeats(server: PrefectServer, run_id: UUID) -> int:
    return len(events(server, {"event": {"name": ["prefect.flow-run.heartbeat"]},
                               "resource": {"id": [f"prefect.flow-run.{run_id}"]}}))  # fmt: skip


def actions_taken(server: PrefectServer) -> list[Any]:
    """What the automations did (a failed action says why), for a failing test's message."""
    taken = events(server, {"event": {"prefix": ["prefect.automation.action"]}})
    return [(e["event"], e["resource"].get("prefect.resource.name"), e.get("payload")) for e in taken]


@pytest.fixture
def stack(tmp_path: Path, prefect_database: Path) -> Iterator[dict[str, Any]]:
    """A Prefect server of its own (the automations must not touch other tests' runs) and the served deployments."""
    server = PrefectServer(tmp_path / "prefect", database_template=prefect_database).start()
    env = {**os.environ, **server.client_env(), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT)}
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/deployments/crash_support.py")], cwd=ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield {"server": server, "serve": serve, "log": tmp_path / "serve.log"}
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        log.close()
        server.stop()


def power_cut(stack: dict[str, Any]) -> None:
    """Every process at once: the served runs, `serve`, the server; then the server alone again, on its database."""
    server: PrefectServer = stack["server"]
    os.killpg(stack["serve"].pid, signal.SIGKILL)
    stack["serve"].wait()
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.start()


def deployment_id(client: SyncPrefectClient, name: str) -> UUID:
    return wait_until(
        lambda: _read_deployment(client, name),
        done=lambda found: found is not None,
        failed=lambda _: None,
        what=f"the served deployment {name}",
        timeout=120,
        max_delay=2,
    )


def _read_deployment(client: SyncPrefectClient, name: str) -> UUID | None:
    try:
        return client.read_deployment_by_name(name).id
    except ObjectNotFound:
        return None


@pytest.mark.slow  # about 3 min: two heartbeats, a server restart and the zombie window
def test_a_run_killed_by_a_power_cut_is_marked_crashed_and_handed_to_cleanup_run(stack: dict[str, Any]) -> None:
    server: PrefectServer = stack["server"]
    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        session_tier = deployment_id(client, "scale-out-session-tier/session-tier")
        deployment_id(client, crashes.CLEANUP_DEPLOYMENT)
        lines = [run_setup(None, {}) for _ in range(2)]
        assert f"automation {crashes.CRASH_ZOMBIES!r}: created" in lines[0]
        assert f"automation {crashes.CLEAN_UP_CRASHED!r}: created" in lines[0]
        assert f"automation {crashes.CRASH_ZOMBIES!r}: exists" in lines[1]
        assert f"automation {crashes.CLEAN_UP_CRASHED!r}: exists" in lines[1]
        for name in (crashes.CRASH_ZOMBIES, crashes.CLEAN_UP_CRASHED):
            assert len(client.read_automations_by_name(name)) == 1
        (zombies,) = client.read_automations_by_name(crashes.CRASH_ZOMBIES)
        assert isinstance(zombies.actions[0], ChangeFlowRunState)
        (cleanup,) = client.read_automations_by_name(crashes.CLEAN_UP_CRASHED)
        assert isinstance(cleanup.actions[0], RunDeployment)
        # the test's heartbeats come every 30 s: a shorter window than the product's, through the same update path
        assert crashes.ensure_automation(client, crashes.crash_zombies(within=WINDOW)) == "updated"
        cleanup_id = cleanup.actions[0].deployment_id
        assert crashes.ensure_automation(client, crashes.clean_up_crashed(cleanup_id, within=WINDOW)) == "updated"

        keyed = client.create_flow_run_from_deployment(session_tier, parameters={"params": {"run_key": "killed-1"}})
        unkeyed = client.create_flow_run_from_deployment(session_tier, parameters={"params": {}})
        for run in (keyed, unkeyed):  # the second heartbeat: the first one has reached the triggers service
            wait_until(lambda run=run: heartbeats(server, run.id), done=lambda n: n >= 2, failed=lambda _: None,
                       what=f"two heartbeats of {run.name}", timeout=150, max_delay=3)  # fmt: skip

        power_cut(stack)

        for run in (keyed, unkeyed):
            crashed = wait_until(
                lambda run=run: client.read_flow_run(run.id),
                done=lambda r: r.state is not None and r.state.type == StateType.CRASHED,
                failed=lambda r: f"{r.name} is {r.state.name}" if r.state and r.state.type in FINISHED else None,
                what=f"{run.name} marked Crashed",
                timeout=WINDOW.total_seconds() + 90,
                max_delay=3,
            )
            assert crashed.state is not None and "heartbeat" in (crashed.state.message or "")

        def cleanups() -> dict[str, Any]:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["cleanup"]))
            )
            return {r.parameters["params"]["run_key"]: r for r in runs}

        try:
            found = wait_until(
                cleanups, done=lambda c: {"killed-1", str(unkeyed.id)} <= set(c), failed=lambda _: None,
                what="the cleanup-runs of both crashed runs", timeout=60, max_delay=2,
            )  # fmt: skip
        except WaitTimeout as error:
            raise AssertionError(f"{error}; the automations' actions: {actions_taken(server)}") from None
        assert set(found) == {"killed-1", str(unkeyed.id)}  # one each, the run key of each
        for run in found.values():
            client.set_flow_run_state(run.id, Cancelled(), force=True)
