"""The fault matrix: every flow x every API action it calls x every fault that applies to that action.

The actions come from the code, not from a hand list: `actions.json` holds the sandbox's request stats
(`GET /_sandbox/stats`) of one clean run of each flow, recorded by
`TCSCALE_RECORD_MATRIX=1 uv run pytest -m slow tests/reliability -k follows_the_code`, and the slow test
`test_the_matrix_follows_the_code` fails when a flow's calls change and the file was not recorded again.

Fault kinds (`POST /_sandbox/faults` rules, see sandbox/README.md):
- throttled: a burst of RequestLimitExceeded (3 answers), on every action;
- internal-error: one InternalError, on every action;
- lost-answer: the request takes effect, its answer is lost (HTTP 502), on every action that changes something;
- late-answer: the request takes effect after the client's request deadline has passed (TCSCALE_REQUEST_TIMEOUT),
  on every action that changes something: the client gives up while the cloud still applies it;
- restarted: the cloud's API endpoint restarts when the action is called: every connection dropped (a write's after
  it took effect: its answer lost), new ones refused for OUTAGE_MS, then the same state served again (a real cloud
  loses no resource), on every action: reads must be asked again, a write's lost connection is a lost answer;
- failed: the (first) operation the action starts ends in its failed state (CREATEFAILED, LAUNCH_FAILED, a failed CLB
  task, a failed scaling activity), where the action starts one;
- past-deadline: the operation the action starts takes longer than its step's deadline (the realistic latency
  profile, the step's wait shortened), on the first action of each wait a flow has;
and for the flows that rewrite the business servers' sdk.config over SSH: the SSH connection dropped once or at
every command, SSH refused for a second (sshd restarting), an SFTP session dropped, an SFTP write refused, a failed
restart, a failed health check.

Faults during the undo itself (`undo_cases`): the run fails on a late change (its first rule), then a throttling
burst or a lost answer hits one action its undo calls (a rule armed by the first: `after`); the undo must finish.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.reliability.flows import FLOWS, Knobs

ACTIONS_FILE = Path(__file__).with_name("actions.json")
RECORD = os.environ.get("TCSCALE_RECORD_MATRIX") == "1"
REQUEST_TIMEOUT = 2  # seconds: TCSCALE_REQUEST_TIMEOUT in the late-answer cases
LATE_MS = 3000  # the late answer arrives after that deadline, within the product's bound (tasks/cloud.py
# lost_write_window: twice the request timeout since it was sent), after which it assumes a lost write never lands
OUTAGE_MS = 1000  # the API down 1 s: 10 s at the product's retry schedule, which the suite runs at a tenth
SLOW_PROFILE = {"profile": "realistic", "time_scale": 0.05}  # image 6 s, server 1.5 s, CLB 0.3 s, CLB task 0.1 s
Rule = dict[str, Any]


@dataclass
class Case:
    flow: str
    step: str  # the API action ("cvm.RunInstances"), or the guest step ("repoint")
    kind: str
    rules: list[Rule]
    knobs: Knobs = field(default_factory=Knobs)
    profile: dict[str, Any] | None = None  # the sandbox clock's latency profile during the run
    env: dict[str, str] = field(default_factory=dict)
    guest_rules: Callable[[dict[str, Any]], list[Rule]] | None = None  # rules naming the guide's servers

    @property
    def id(self) -> str:
        return f"{self.flow}/{self.step.split('.')[-1]}/{self.kind}"


def recorded_actions() -> dict[str, dict[str, list[str]]]:
    """{flow: {service: [action, ...]}} from a clean run of each flow."""
    return json.loads(ACTIONS_FILE.read_text()) if ACTIONS_FILE.exists() else {}


def changes(action: str) -> bool:
    return not action.startswith(("Describe", "Inquiry", "Get"))


def failed_operation(service: str, action: str) -> Rule | None:
    """The rule that makes the operation `action` starts end in its failed state, or None: it starts none."""
    message = {
        ("cvm", "CreateImage"): "disk snapshot failed",
        ("cvm", "RunInstances"): "ResourceInsufficient.ZoneSoldOut",
        ("cvm", "TerminateInstances"): "instance busy",
        ("clb", "CreateLoadBalancer"): "vip allocation failed",
        ("clb", "CreateListener"): "listener rule sync failed",
        ("clb", "RegisterTargets"): "rs binding failed",
        ("clb", "DeregisterTargets"): "rs unbinding failed",
        ("clb", "DeleteListener"): "listener removal failed",
        ("clb", "DeleteLoadBalancer"): "clb release failed",
    }.get((service, action))
    if message:
        return {"service": service, "action": action, "async_failure": message, "count": 1}
    # Auto Scaling: the activity the call starts fails where its servers are launched or bound
    if (service, action) in {("as", "ModifyDesiredCapacity"), ("as", "ScaleOutInstances")}:
        return {
            "service": "cvm",
            "action": "RunInstances",
            "async_failure": "ResourceInsufficient.ZoneSoldOut",
            "count": 1,
        }
    if (service, action) == ("as", "AttachInstances"):
        return {"service": "clb", "action": "RegisterTargets", "async_failure": "rs binding failed", "count": 1}
    return None


def api_cases(flow: str, service: str, action: str) -> list[Case]:
    step, match = f"{service}.{action}", {"service": service, "action": action}
    cases = [
        Case(flow, step, "throttled", [{**match, "error_code": "RequestLimitExceeded", "count": 3}]),
        Case(flow, step, "internal-error", [{**match, "error_code": "InternalError", "count": 1}]),
    ]
    if changes(action):
        cases.append(Case(flow, step, "lost-answer", [{**match, "lose_answer": True, "count": 1}]))
        late = {**match, "latency_ms": LATE_MS, "count": 1}
        cases.append(Case(flow, step, "late-answer", [late], env={"TCSCALE_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT)}))
    # a write whose connection dropped may land later: a short request timeout keeps that wait short (lost_write_window)
    restart = {**match, "outage_ms": OUTAGE_MS, "lose_answer": changes(action), "count": 1}
    cases.append(Case(flow, step, "restarted", [restart], env={"TCSCALE_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT)}))
    failed = failed_operation(service, action)
    if failed is not None:
        cases.append(Case(flow, step, "failed", [failed]))
    return cases


# The first action of each wait, and the deadline that makes it time out under SLOW_PROFILE.
WAITS: dict[str, tuple[list[str], dict[str, float]]] = {
    "image": (["cvm.CreateImage"], {"image": 1}),
    "launch": (["cvm.RunInstances"], {"launch": 0.3}),
    "clb": (["clb.CreateLoadBalancer", "clb.CreateListener", "clb.RegisterTargets"], {"clb": 0.05}),
    "activity": (["as.AttachInstances", "as.ModifyDesiredCapacity"], {"activity_timeout": 0.05}),
}


def deadline_cases(flow: str, called: set[str]) -> list[Case]:
    cases = []
    for wait in FLOWS[flow].waits:
        anchors, short = WAITS[wait]
        anchor = next((a for a in anchors if a in called), None)
        if anchor is None:
            continue
        knobs = Knobs()
        if "activity_timeout" in short:
            knobs.activity_timeout = short["activity_timeout"]
        else:
            knobs.timeouts = knobs.timeouts.model_copy(update=short)
        cases.append(Case(flow, anchor, "past-deadline", [], knobs=knobs, profile=SLOW_PROFILE))
    return cases


def guest_cases(flow: str) -> list[Case]:
    """SSH, restart and health faults on the business servers' repoint (or, for cleanup-run, their restore)."""
    step = "restore" if flow == "cleanup-run" else "repoint"

    def restart_fails(guide: dict[str, Any]) -> list[Rule]:
        from tests.flows.support import restart_fails

        return [restart_fails(guide["business_server"]["instance_id"])]

    cases = [
        Case(flow, step, "ssh-dropped-once", [{"service": "ssh", "action": "exec", "count": 1}]),
        # sshd restarting: the connection dropped, then connections refused (ECONNREFUSED) for a second
        Case(flow, step, "ssh-refused", [{"service": "ssh", "action": "connect", "latency_ms": 1000, "count": 1}]),
        Case(flow, step, "ssh-dropped-always", [{"service": "ssh", "action": "exec"}]),
        Case(flow, step, "sftp-dropped-once", [{"service": "ssh", "action": "sftp", "count": 1}]),
        Case(flow, step, "sftp-write-refused", [{"service": "ssh", "action": "write", "error_message": "No space"}]),
        Case(flow, step, "restart-failed", [], guest_rules=restart_fails),
    ]
    health = Knobs(timeouts=Knobs().timeouts.model_copy(update={"health": 4}))
    if flow != "cleanup-run":  # the new session servers' auth service never comes up: their health check fails
        down = {"service": "guest", "action": "mina_auth.start", "error_message": "mina_auth: port in use"}
        cases.append(Case(flow, "health", "health-failed", [down], knobs=health))
    return cases


def business_app_down() -> Case:
    """The new business servers' app crashes at boot and at each of pm2's restarts: their health check fails. (Only
    the business tier alone: in scale-out-cluster the rule would hit the session tier's repoint restarts first.)"""
    crash = [
        {"service": "guest", "action": f"weapp.{verb}", "error_message": "pm2: app crashed"}
        for verb in ("start", "restart")
    ]
    health = Knobs(timeouts=Knobs().timeouts.model_copy(update={"health": 4}))
    return Case("scale-out-business-tier", "health", "health-failed", crash, knobs=health)


# How each flow is made to fail late (its first rule, id FIRST), and the actions its undo then calls.
FIRST = "run-fails"
BIND_FAILS = {"service": "clb", "action": "RegisterTargets", "async_failure": "rs binding failed", "count": 1}
CHECK_FAILS = {"service": "cvm", "action": "DescribeInstances", "error_code": "InternalError", "count": 1}
UNDOS: dict[str, tuple[Rule, list[str]]] = {
    "scale-out-session-tier": (
        BIND_FAILS,
        ["clb.DeleteListener", "vpc.DeleteSecurityGroupPolicies", "cvm.TerminateInstances", "cvm.DeleteImages"],
    ),
    "scale-out-business-tier": (
        BIND_FAILS,
        ["clb.DeleteLoadBalancer", "vpc.DeleteSecurityGroupPolicies", "cvm.TerminateInstances", "cvm.DeleteImages"],
    ),
    "set-capacity": (CHECK_FAILS, ["as.ModifyDesiredCapacity"]),  # the server check fails after the change
}


def undo_cases(flow: str) -> list[Case]:
    """The flow fails on a late change; a throttling burst, then (another case) a lost answer, on each undo action."""
    if flow not in UNDOS:
        return []
    first, undo_actions = UNDOS[flow]
    found = []
    for step in undo_actions:
        service, action = step.split(".")
        armed = {"service": service, "action": action, "after": FIRST}
        throttled = {**armed, "error_code": "RequestLimitExceeded", "count": 3}
        lost = {**armed, "lose_answer": True, "count": 1}
        found.append(Case(flow, step, "throttled-during-undo", [{**first, "id": FIRST}, throttled]))
        found.append(Case(flow, step, "lost-answer-during-undo", [{**first, "id": FIRST}, lost]))
    return found


def cases() -> list[Case]:
    found: list[Case] = []
    for flow, services in recorded_actions().items():
        called = {f"{service}.{action}" for service, actions in services.items() for action in actions}
        for step in sorted(called):
            service, action = step.split(".", 1)
            found += api_cases(flow, service, action)
        found += deadline_cases(flow, called)
        if FLOWS[flow].repoints:
            found += guest_cases(flow)
        if flow == "scale-out-business-tier":
            found.append(business_app_down())
        found += undo_cases(flow)
    return found
