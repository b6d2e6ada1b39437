"""The crash matrix (issue 14): each flow's process SIGKILLed at each of its step boundaries (boundaries.py), on a
cloud that also holds the operator's own resources; then, checked through the cloud itself:
- rerun: the same flow run again with the same run key finishes with its intended result, nothing made twice,
  every business app running the config on its disk, the operator's resources untouched; or
- cleanup: `cleanup-run` of that key leaves the cloud as it was before the killed run (every sdk.config
  byte-identical, every app running it, the operator's resources untouched).
For cleanup-run itself both are the same: run it again.

A killed run's tier lock is freed by the Prefect server when its lease expires (LEASE_SECONDS, 300 s; proven with a
real server in tests/flows/test_tier_lock.py); here the test frees the slot at once, as the expiry would, after
checking the killed run held it. And a Prefect server killed and restarted on its database under a running change:
the change finishes or undoes, and its tier is free afterwards.

The whole matrix is slow (`uv run pytest -m slow tests/reliability/test_crash_matrix.py -n 2`); SMOKE runs by
default. The summary is printed at the end of the session (conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from devstack.prefect_server import PrefectServer
from flows.shared.ledger import forget_capacity, forget_group_changes
from flows.shared.tier_lock import limit_name
from flows.shared.tier_run import TierOutcome
from sandbox.server import EmbeddedSandbox
from tasks.waiters import wait_until
from tests.flows.support import business_configs, guest_status, refresh_known_hosts, wait_for_a_fault_to_fire
from tests.flows.test_cleanup import KILLED, cleanup
from tests.reliability import boundaries
from tests.reliability.boundaries import RESTART, Boundary
from tests.reliability.cloud import operator_view, snapshot
from tests.reliability.flows import CRASH_FLOWS, Knobs, capacity_set, duplicates, new_ids
from tests.reliability.test_fault_matrix import (
    apps_as_before,
    changed_configs,
    differences,
    leaked_count,
    start,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "crash-1"
KEYS = {"cleanup-run": KILLED}  # cleanup-run cleans up the killed run its preparation leaves
SMOKE = {
    "scale-out-session-tier/03-at-CreateListener#1/rerun",
    "scale-out-session-tier/03-at-CreateListener#1/cleanup",
}
# Cases that expose a defect not fixed yet: {case id: reason}. Strict: a fixed defect makes its case XPASS (fail).
DEFECTS: dict[str, str] = {}

RUN_IN_A_PROCESS = """
import json, sys
from pydantic_core import to_json
from tests.reliability.flows import CRASH_FLOWS, Knobs
guide, flow, key = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
result = CRASH_FLOWS[flow].run(guide, Knobs(run_key=key))
print("OUTCOME " + to_json(result).decode(), flush=True)
"""


def recoveries(flow: str) -> tuple[str, ...]:
    return ("rerun",) if flow == "cleanup-run" else ("rerun", "cleanup")


def params() -> list[Any]:
    found = []
    for boundary in boundaries.all_boundaries():
        for recovery in recoveries(boundary.flow):
            case_id = f"{boundary.id}/{recovery}"
            marks = [] if case_id in SMOKE else [pytest.mark.slow]
            if case_id in DEFECTS:
                marks.append(pytest.mark.xfail(strict=True, reason=f"defect: {DEFECTS[case_id]}"))
            found.append(pytest.param(boundary, recovery, id=case_id, marks=marks))
    return found


def run_until_killed(sandbox: EmbeddedSandbox, guide: dict[str, Any], boundary: Boundary, key: str, log: Path) -> None:
    """The flow in a process of its own, held at the boundary by a sandbox rule, then SIGKILLed (a power cut)."""
    business = guide["business_server"]["instance_id"]
    restarts = guest_status(sandbox, business)["restarts"]
    sandbox.admin("POST", "faults", boundary.hold_rule(business))
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}  # the test harness's server
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", RUN_IN_A_PROCESS, json.dumps(guide), boundary.flow, key],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_a_fault_to_fire(sandbox, process, f"the run to reach {boundary.id}")
    except Exception as error:
        raise AssertionError(f"{error}\n{log.read_text(errors='replace')[-3000:]}") from None
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        sandbox.admin("DELETE", "faults")  # the held request then fails: it never takes effect
    if boundary.request == RESTART:  # the restart command runs on the server to its end, as pm2's would
        wait_until(
            lambda: guest_status(sandbox, business),
            done=lambda app: app["restarts"] > restarts and app["state"] == "online",
            failed=lambda _: None,
            what="the business app's restart to finish",
            timeout=30,
            first_delay=0.2,
            max_delay=0.5,
        )


def free_the_killed_runs_tiers() -> list[str]:
    """What the server does once a dead holder's lease has expired: its slots freed. The tiers that were held."""
    held = []
    with get_client(sync_client=True) as client:
        for tier in ("session", "business"):
            try:
                limit = client.read_global_concurrency_limit_by_name(limit_name(tier))
            except ObjectNotFound:
                continue
            if limit.active_slots:
                client.release_concurrency_slots([limit.name], limit.active_slots, occupancy_seconds=1.0)
                held.append(tier)
    return held


def apps_follow_their_configs(sandbox: EmbeddedSandbox) -> list[str]:
    """Every business app is online with the authServerUrl its sdk.config holds (no config written and not loaded)."""
    problems = []
    for instance_id, config in business_configs(sandbox).items():
        app = guest_status(sandbox, instance_id)
        url = json.loads(config).get("authServerUrl") if config else None
        loaded = app["loaded"].get("authServerUrl")
        if app["state"] != "online" or loaded != url:
            problems.append(f"{instance_id}: app {app['state']} with {loaded}, its sdk.config {url}")
    return problems


def reported_servers(result: Any) -> set[str]:
    """The servers a re-run reports as its own: one tier's outcome, or the cluster's [session, business] list."""
    outcomes = result if isinstance(result, list | tuple) else [result]
    return {i for outcome in outcomes for i in (getattr(outcome, "new_instance_ids", None) or [])}


@pytest.mark.parametrize(("boundary", "recovery"), params())
def test_crash(
    boundary: Boundary,
    recovery: str,
    guide: dict[str, Any],
    cloud_env: EmbeddedSandbox,
    tmp_path: Path,
    record_property: Any,
) -> None:
    sandbox, spec, key = cloud_env, CRASH_FLOWS[boundary.flow], KEYS.get(boundary.flow, KEY)
    operator, baseline, before = start(sandbox, guide, boundary.flow)
    forget_capacity(key)  # a case's sandbox is new, the session's Prefect server (and a key's kept change) is not
    forget_group_changes(key)
    run_until_killed(sandbox, guide, boundary, key, tmp_path / "killed-run.log")
    held = free_the_killed_runs_tiers()
    refresh_known_hosts(sandbox, guide)  # the operator's known_hosts lists the servers a scaling group launched since
    problems = [] if held else ["the killed run held no tier lock"]
    error: BaseException | None = None
    try:
        result = spec.run(guide, Knobs(run_key=key)) if recovery == "rerun" else cleanup(guide, key=key)
    except Exception as exc:
        error, result = exc, None
        problems.append(f"the {recovery} failed: {str(exc)[:500]}")
    after = snapshot(sandbox)
    if boundary.flow == "cleanup-run":  # the killed run's leftovers gone: the cloud as before that run
        left, leaked = differences(baseline, after), leaked_count(baseline, after)
        left += apps_as_before(sandbox, baseline, guide)
    elif recovery == "rerun":
        left = spec.intended(baseline, before, after, result, guide) if error is None else []
        reported = len(reported_servers(result))
        leaked = max(0, len(new_ids(before, after, "instances")) - reported) if boundary.flow.startswith("scale") else 0
        left += [f"{leaked} new server(s) the re-run does not report as its own"] if leaked else []
        left += apps_follow_their_configs(sandbox)
    else:
        left, leaked = differences(before, after), leaked_count(before, after)
        if boundary.flow == "set-capacity" and left and not capacity_set(baseline, before, after, None, guide):
            left, leaked = [], 0  # it made nothing to clean up: the capacity it set (its intended result) stays
        left += apps_as_before(sandbox, before, guide)
    dups = duplicates(before, after)
    touched = operator_view(after, operator) != operator_view(before, operator)
    problems += left + [f"duplicate: {d}" for d in dups] + (["the operator's resources changed"] if touched else [])
    configs = changed_configs(before, after) if recovery == "cleanup" and boundary.flow != "set-capacity" else 0
    summary = {
        "outcome": "FAILED CHECK" if problems else {"rerun": "finished by a re-run", "cleanup": "cleaned up"}[recovery],
        "leaked": leaked,
        "duplicates": len(dups),
        "configs_changed": configs + sum("sdk.config" in p for p in problems),
        "operator_touched": touched,
    }
    record_property("crash_matrix", json.dumps(summary))
    assert not problems, f"{boundary.id} killed, then {recovery}:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("flow", list(CRASH_FLOWS))
def test_crash_points_follow_the_code(flow: str, guide: dict[str, Any], cloud_env: EmbeddedSandbox) -> None:
    """crash_points.json holds the changes each flow makes in a clean run, in order (the boundaries come from it)."""
    start(cloud_env, guide, flow)
    CRASH_FLOWS[flow].run(guide, Knobs())
    changes = cloud_env.admin("GET", "stats")["changes"]
    recorded = boundaries.recorded_points()
    if boundaries.RECORD:  # one flow at a time (record without -n)
        boundaries.POINTS_FILE.write_text(json.dumps({**recorded, flow: changes}, indent=2) + "\n")
        recorded = boundaries.recorded_points()
    assert recorded.get(flow) == changes, "the flow's changes moved: record again (TCSCALE_RECORD_MATRIX=1)"


SERVER_HOLD_MS = 90_000  # the run held while its Prefect server is killed and started again (long on a busy machine)


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.timeout(900)  # two Prefect servers' start-ups and a 90 s hold, on a busy machine
def test_a_change_outlives_its_prefect_server_killed_and_restarted(
    guide: dict[str, Any], cloud_env: EmbeddedSandbox, tmp_path: Path
) -> None:
    """A session scale-out holds its tier on a real Prefect server (filesystem lease storage, as `tcscale up` and the
    team setup run it); the server is SIGKILLed mid-run and started again on its database. The run finishes (or
    undoes itself), and its tier is free afterwards."""
    sandbox, flow = cloud_env, "scale-out-session-tier"
    operator, baseline, before = start(sandbox, guide, flow)
    # held at its listener, past the server's restart; then the request goes through and the run goes on
    sandbox.admin("POST", "faults", {"service": "clb", "action": "CreateListener", "latency_ms": SERVER_HOLD_MS,
                                     "count": 1})  # fmt: skip
    server = PrefectServer(tmp_path / "prefect").start()
    log = tmp_path / "run.log"
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", RUN_IN_A_PROCESS, json.dumps(guide), flow, KEY],
                cwd=ROOT,
                env={**os.environ, **server.client_env()},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_a_fault_to_fire(sandbox, process, "the run to hold its tier and reach its listener")
            assert server.process is not None
            os.killpg(server.process.pid, signal.SIGKILL)  # the server's machine loses power
            server.process.wait()
            server.start()  # same home, same database, same lease storage
            code = process.wait(timeout=SERVER_HOLD_MS / 1000 + 240)
        finally:
            if process.poll() is None:
                process.kill()
        with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(limit_name("session"))
    finally:
        server.stop()
    after = snapshot(sandbox)
    output = log.read_text(errors="replace")[-3000:]
    if code == 0:
        (line,) = [line for line in log.read_text().splitlines() if line.startswith("OUTCOME ")]
        outcome = TierOutcome.model_validate_json(line.removeprefix("OUTCOME "))
        problems = CRASH_FLOWS[flow].intended(baseline, before, after, outcome, guide)
    else:
        problems = differences(before, after) + apps_as_before(sandbox, before, guide)
    problems += apps_follow_their_configs(sandbox) + [f"duplicate: {d}" for d in duplicates(before, after)]
    if operator_view(after, operator) != operator_view(before, operator):
        problems.append("the operator's resources changed")
    assert (limit.active_slots, limit.active) == (0, True), f"the session tier is left locked\n{output}"
    assert not problems, f"exit {code}:\n" + "\n".join(problems) + f"\n{output}"
