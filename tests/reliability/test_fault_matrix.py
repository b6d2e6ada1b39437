"""The fault matrix (issue 14): each case injects one fault into one step of one flow, on a cloud that also holds
the operator's own resources, and checks the cloud itself afterwards:
- the run succeeded (by retry): its intended result exists once (no duplicate), every business server's sdk.config
  is the intended one or unchanged, and the operator's resources are untouched; or
- the run failed: the cloud equals its snapshot from before the run (nothing leaked, nothing taken away), every
  sdk.config byte-identical, every business app running with its original authServerUrl.
cleanup-run, idempotent by design, may instead fail and finish on a re-run without faults.

The whole matrix is slow (`uv run pytest -m slow tests/reliability`); SMOKE (one case per fault kind) runs in the
default suite. The summary is printed at the end of the session (conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.server import EmbeddedSandbox
from tests.flows.support import guest_status, refresh_known_hosts
from tests.reliability import matrix
from tests.reliability.cloud import operator_view, seed_operator_resources, snapshot
from tests.reliability.flows import CRASH_FLOWS, FLOWS, duplicates, session_tier_kept

SMOKE = {
    "scale-out-session-tier/RunInstances/lost-answer",
    "scale-out-business-tier/CreateListener/throttled",
    "scale-out-session-tier/CreateSecurityGroupPolicies/internal-error",
    "scale-out-session-tier/CreateImage/failed",
    "scale-out-session-tier/repoint/restart-failed",
    "scale-out-session-tier/RegisterTargets/restarted",  # 5 s: the API restarts as the binding lands
}
# Defects the matrix found and not fixed yet: {case id: why} (a race: not strict).
DEFECTS: dict[str, str] = {}


def params() -> list[Any]:
    return [pytest.param(c, id=c.id, marks=marks(c.id)) for c in matrix.cases()]


def marks(case_id: str) -> list[Any]:
    found = [] if case_id in SMOKE else [pytest.mark.slow]
    if case_id in DEFECTS:
        found.append(pytest.mark.xfail(strict=False, reason=f"defect: {DEFECTS[case_id]}"))
    return found


def start(sandbox: EmbeddedSandbox, guide: dict[str, Any], flow: str) -> tuple[dict[str, Any], ...]:
    """The operator's resources, the flow's starting point; the snapshots before each; request stats reset."""
    operator = seed_operator_resources(sandbox, guide)
    baseline = snapshot(sandbox)
    CRASH_FLOWS[flow].prepare(sandbox, guide)  # both matrices' flows
    refresh_known_hosts(sandbox, guide)
    before = snapshot(sandbox)
    sandbox.admin("POST", "stats/reset")
    return operator, baseline, before


@pytest.mark.parametrize("case", params())
def test_fault(
    case: matrix.Case,
    guide: dict[str, Any],
    cloud_env: EmbeddedSandbox,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Any,
) -> None:
    sandbox, spec = cloud_env, FLOWS[case.flow]
    operator, baseline, before = start(sandbox, guide, case.flow)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    rules = case.rules + (case.guest_rules(guide) if case.guest_rules else [])
    for rule in rules:
        sandbox.admin("POST", "faults", rule)
    if case.profile:
        sandbox.admin("POST", "clock", case.profile)
    error: BaseException | None = None
    try:
        result = spec.run(guide, case.knobs)
    except Exception as exc:  # the run failed: it must have undone itself
        error, result = exc, None
    finally:
        fired = [r["fired"] for r in sandbox.admin("GET", "faults")]
        sandbox.admin("DELETE", "faults")
        sandbox.admin("POST", "clock", {"profile": "instant", "time_scale": 1.0})
        for name in case.env:
            monkeypatch.delenv(name)
    after = snapshot(sandbox)
    problems = [f"a fault never fired: {rules}"] if not all(fired) else []
    problems += undo_unfinished(error)
    if case.kind == "throttled" and error is not None:  # every read and write is retried (tasks/cloud.py)
        problems.append(f"a throttling burst was not retried: {str(error)[:300]}")
    outcome, left, leaked = ("succeeded by retry", [], 0) if error is None else ("undone cleanly", [], 0)
    if error is None:
        problems += spec.intended(baseline, before, after, result, guide)
    elif case.flow == "cleanup-run":  # it removed only the killed run's things; a re-run finishes the work
        problems += only_removed_leftovers(baseline, after)
        outcome = "finished by a re-run"
        try:
            result = spec.run(guide, matrix.Knobs())
        except Exception as exc:
            problems.append(f"the re-run failed too: {str(exc)[:300]}")
        after = snapshot(sandbox)
        left = spec.intended(baseline, before, after, result, guide)
        leaked = leaked_count(baseline, after)
    elif case.flow == "scale-out-cluster" and after["configs"] != before["configs"]:
        # the session tier finished (its repoint is its last step) and the business tier failed: the session tier stays
        left = session_tier_kept(before, after, operator) + business_group_untouched(guide, before, after)
        leaked = len(left)
        outcome = "undone cleanly (the session tier kept)"
    else:
        left = differences(before, after)
        leaked = leaked_count(before, after)
        problems += apps_as_before(sandbox, before, guide)
    dups = duplicates(before, after)
    touched = operator_view(after, operator) != operator_view(before, operator)
    configs = changed_configs(before, after) if outcome == "undone cleanly" else 0
    problems += left + [f"duplicate: {d}" for d in dups] + (["the operator's resources changed"] if touched else [])
    summary = {
        "outcome": "FAILED CHECK" if problems else outcome,
        "leaked": leaked,
        "duplicates": len(dups),
        "configs_changed": configs + sum("sdk.config" in p for p in problems),
        "operator_touched": touched,
        "throttled_not_retried": case.kind == "throttled" and error is not None,
    }
    record_property("fault_matrix", json.dumps(summary))
    assert not problems, f"{case.id} ({'failed: ' + str(error)[:300] if error else 'succeeded'}):\n" + "\n".join(
        problems
    )


def undo_unfinished(error: BaseException | None) -> list[str]:
    """An undo finishes: what it removes is waited for until it can be removed; it never leaves work by hand."""
    notes = getattr(error, "__notes__", None) or []
    return [f"the undo did not finish: {note[:600]}" for note in notes if note.startswith("undo incomplete")]


def business_group_untouched(guide: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    group_id = guide["security_groups"]["business"]
    same = after["security_groups"][group_id] == before["security_groups"][group_id]
    return [] if same else [f"the business servers' security group {group_id} changed"]


def leaked_count(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Resources, listeners, (instance, port) bindings and rules present in one snapshot and not the other."""
    count = 0
    for kind in ("instances", "images", "launch_configurations", "groups", "scheduled_actions", "policies"):
        count += len(set(after[kind]) ^ set(before[kind]))
    for lb_id in set(before["load_balancers"]) | set(after["load_balancers"]):
        was, now = before["load_balancers"].get(lb_id), after["load_balancers"].get(lb_id)
        if was is None or now is None:
            count += 1
            continue
        for listener in set(was) | set(now):
            count += int(listener not in was or listener not in now)
            count += len(set(was.get(listener) or []) ^ set(now.get(listener) or []))
    for group_id in set(before["security_groups"]) | set(after["security_groups"]):
        for direction in ("ingress", "egress"):
            rules = [
                {
                    json.dumps(rule, sort_keys=True)
                    for rule in (snap["security_groups"].get(group_id) or {}).get(direction, [])
                }
                for snap in (before, after)
            ]
            count += len(rules[0] ^ rules[1])
    return count


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What the run left behind or took away, per kind of resource."""
    return [f"{kind}: before {before[kind]!r:.400}, after {after[kind]!r:.400}" for kind in before
            if before[kind] != after[kind]]  # fmt: skip


def only_removed_leftovers(baseline: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Everything of the cloud before the killed run is still there (a failed cleanup removed only leftovers)."""
    problems = []
    for kind in ("instances", "images", "load_balancers", "launch_configurations", "groups"):
        gone = set(baseline[kind]) - set(after[kind])
        if gone:
            problems.append(f"{kind} removed that the killed run did not make: {sorted(gone)}")
    return problems


def apps_as_before(sandbox: EmbeddedSandbox, before: dict[str, Any], guide: dict[str, Any]) -> list[str]:
    """Every business app that ran before runs, with the authServerUrl of its (unchanged) sdk.config."""
    problems = []
    for instance_id, config in before["configs"].items():
        app = guest_status(sandbox, instance_id)
        url = json.loads(config or b"{}").get("authServerUrl") if config else None
        if app["state"] != "online" or app["loaded"].get("authServerUrl") != url:
            problems.append(f"{instance_id}: app {app['state']} with {app['loaded'].get('authServerUrl')}")
    return problems


def changed_configs(before: dict[str, Any], after: dict[str, Any]) -> int:
    """How many business servers' sdk.config an undone run changed."""
    return sum(1 for i, config in before["configs"].items() if after["configs"].get(i) != config)


@pytest.mark.slow
@pytest.mark.parametrize("flow", list(FLOWS))
def test_the_matrix_follows_the_code(flow: str, guide: dict[str, Any], cloud_env: EmbeddedSandbox) -> None:
    """actions.json holds the API actions each flow calls in a clean run (the matrix is made from it)."""
    start(cloud_env, guide, flow)
    FLOWS[flow].run(guide, matrix.Knobs())
    requests = cloud_env.admin("GET", "stats")["requests"]
    called = {service: sorted(actions) for service, actions in sorted(requests.items())}
    recorded = matrix.recorded_actions()
    if matrix.RECORD:  # one flow at a time (record without -n)
        matrix.ACTIONS_FILE.write_text(json.dumps({**recorded, flow: called}, indent=2) + "\n")
        recorded = matrix.recorded_actions()
    assert recorded.get(flow) == called, "the flow's calls changed: record again (TCSCALE_RECORD_MATRIX=1, matrix.py)"
