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
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.settings import PREFECT_API_URL
from prefect.variables import Variable

from flows.autoscaling_steps import plan
from flows.autoscaling_steps.outcome import launch_seconds_variable
from flows.cleanup_run import cleanup_run
from flows.run_forms import CleanupForm
from flows.shared.ledger import forget_capacity, forget_group_changes, remembered_capacities, remembered_group_changes
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks import autoscaling_policies as policies
from tasks import autoscaling_undo, clb
from tasks.autoscaling_launch_configurations import create_launch_configuration
from tasks.cloud import call_json, clients_for
from tasks.cvm import Server, describe_servers
from tests.flows.autoscaling_support import autoscaling_params, sandbox_now
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


def cancelled_and_handed_over(
    sandbox: EmbeddedSandbox,
    flow_name: str,
    deployment: Any,
    parameters: dict[str, Any],
    key: str,
    waiting_for: str,
    rule_id: str | None = None,
) -> CleanupForm:
    """A run of `flow_name`'s `deployment` with run key `key`, cancelled as Prefect's runner does once a sandbox
    fault (rule `rule_id`) fired in it; the one cleanup-run created to take its undo over, as the run's report says:
    its form."""
    deploy("cleanup-run", "cleanup", "flows/entrypoints.py:cleanup")
    run, process = start_deployment_run(deployment, {"params": parameters})
    try:
        wait_for_a_fault_to_fire(sandbox, process, waiting_for, rule_id)
        cancel_like_the_runner(process)
    finally:
        if process.poll() is None:
            process.kill()
    handed = handed_over(key)
    assert [r.idempotency_key for r in handed] == [f"undo:{key}:{run.id}"], "no cleanup-run took the undo over"
    report = Artifact.get(f"{flow_name}-{key}")
    assert report is not None and f"undo handed to cleanup-run {handed[0].name}" in str(report.data)
    return CleanupForm.model_validate(handed[0].parameters["params"])


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
    params = session_params(guide, run_key="cancelled-1")
    form = cancelled_and_handed_over(sandbox, "scale-out-session-tier", session_tier, params.model_dump(mode="json"),
                                     "cancelled-1", "the canary's restart to begin")  # fmt: skip

    # the handed-over run, as the cleanup deployment runs it: it undoes everything by the marks, and reports
    cleanup_run(form.parameters())
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
    try:
        form = cancelled_and_handed_over(sandbox, flow_name, deployment, parameters(region, key), key,
                                         "the scale-out's activity to be waited for", waiting["id"])  # fmt: skip
        assert form.restore_configs is False, f"{flow_name} rewrites no sdk.config: none to look for"
        assert (asg.describe_group(region, group.group_id) or pytest.fail("gone")).desired == 1

        sandbox.admin("DELETE", "faults")
        removed = cleanup_run(form.parameters())  # the handed-over run, as the cleanup deployment runs it
        assert removed.capacities_restored == [f"{group.group_id}: 1 -> 0"] and not removed.failed
        assert asg.wait_settled.fn(region, group.group_id, 60, 0.2).desired == 0
        assert remembered_capacities(key) == []
        assert Artifact.get(f"cleanup-run-{key}") is not None
    finally:
        forget_capacity(key)  # the session's Prefect server outlives this test's sandbox


# --- configure-autoscaling on groups it did not create ---------------------------------------------------------

PUBLIC_IMAGE = "img-l8og963d"  # the catalog's public CentOS


def operators_tier_group(
    region: str, tier: str, server: Server, listener_port: int, port: int, launched: int = 0
) -> asg.Group:
    """The tier's scaling group as an operator made it, behind the operator's own CLB that already serves the tier's
    server on `port` (none of it carries a mark of the run under test): its launch configuration, another one named as
    configure-autoscaling names the one it wants, OLDEST_INSTANCE, bounds 0..3, `launched` servers of its own; its
    listener on `listener_port` forwards to `port`."""
    lb_type = "INTERNAL" if tier == "session" else "OPEN"
    balancer = clb.create_load_balancer.fn(region, f"operators-{tier}", lb_type, server.vpc_id, server.subnet_id,
                                           server.project_id, {}, f"operators-{tier}", 30)  # fmt: skip
    listener = clb.ensure_tcp_listener.fn(region, balancer.load_balancer_id, listener_port, f"operators-{tier}",
                                          clb.HealthCheckSpec(check_type="TCP"), "/", 30)  # fmt: skip
    clb.register_targets.fn(region, balancer.load_balancer_id, listener.listener_id,
                            clb.targets_on([server.instance_id], port), 30)  # fmt: skip
    forward = asg.ForwardLoadBalancer(load_balancer_id=balancer.load_balancer_id, listener_id=listener.listener_id,
                                      port=port)  # fmt: skip
    request = {"ImageId": PUBLIC_IMAGE, "InstanceType": server.instance_type, "ProjectId": server.project_id}
    lc, _ = create_launch_configuration.fn(region, f"operators-{tier}", request, {})
    create_launch_configuration.fn(region, plan.launch_configuration_name(tier, PUBLIC_IMAGE), request, {})
    group, _ = asg.create_group.fn(region, plan.group_name(tier), {
        "LaunchConfigurationId": lc.launch_configuration_id, "MinSize": 0, "MaxSize": 3, "DesiredCapacity": launched,
        "VpcId": server.vpc_id, "SubnetIds": [server.subnet_id], "ProjectId": server.project_id,
        "ForwardLoadBalancers": [forward.api()], "TerminationPolicies": ["OLDEST_INSTANCE"]}, {})  # fmt: skip
    return asg.wait_settled.fn(region, group.group_id, 60, 0.2)


def group_state(region: str, group: asg.Group) -> dict[str, Any]:
    """All of a group an undo must put back: its fields, members, scheduled actions, alarm policies, and the pairs
    bound to its CLB listener."""
    now = asg.wait_settled.fn(region, group.group_id, 60, 0.2)
    fwd = group.forward[0]
    return {
        "fields": autoscaling_undo.group_fields(now),
        "members": sorted((m.instance_id, m.creation_type, m.protected) for m in asg.members(region, group.group_id)),
        "scheduled actions": sorted(a.name for a in policies.scheduled_actions(region, group.group_id)),
        "alarm policies": sorted(p.name for p in policies.alarm_policies(region, group.group_id)),
        "bound": sorted(map(str, clb.registered_targets(region, fwd.load_balancer_id, fwd.listener_id))),
    }


def test_a_cancelled_configure_autoscaling_hands_the_cancelled_tiers_undo_to_cleanup_run(
    guide: dict[str, Any], cloud_env: EmbeddedSandbox
) -> None:
    """On groups it did not create, configure-autoscaling's changes (fields, bounds, attached servers, scheduled
    actions, alarm policies) carry no tag: they are kept per run key before each is made, so a cancelled run hands
    its undo over, and cleanup-run puts back exactly the cancelled tier's changes; the tier that had finished keeps
    its configuration, the operator's own scheduled action, alarm policy and server stay, and a field set by hand
    since the run is left (and reported)."""
    sandbox, region, key = cloud_env, guide["region"], "cancelled-configure"
    params = autoscaling_params(guide)
    params.run_key = key
    groups: dict[str, asg.Group] = {}
    for tier in ("session", "business"):
        tier_params: Any = getattr(params, tier)
        (server,) = describe_servers(region, [guide[f"{tier}_server"]["instance_id"]])
        groups[tier] = operators_tier_group(region, tier, server, tier_params.load_balancer.listener_port,
                                            tier_params.backend_port(),
                                            launched=1 if tier == "business" else 0)  # fmt: skip
        tier_params.load_balancer.load_balancer_id = groups[tier].forward[0].load_balancer_id
        tier_params.autoscaling.image_id = PUBLIC_IMAGE  # its launch configuration exists: no image, no launch check
    business = groups["business"].group_id
    start = sandbox_now(sandbox).replace(microsecond=0) + timedelta(days=1)
    nightly = asg.ScheduledAction(name="operators-nightly", min_size=0, max_size=3, desired=1,
                                  start_time=start.isoformat(), end_time=(start + timedelta(days=30)).isoformat(),
                                  recurrence="0 2 * * *")  # fmt: skip
    policies.put_scheduled_action.fn(region, business, nightly)
    policies.put_alarm_policy.fn(region, business, asg.AlarmPolicy(
        name="operators-cpu", adjustment=1, operator="GREATER_THAN", threshold=95, period=300, continuous_time=3,
        cooldown=300))  # fmt: skip
    before = group_state(region, groups["business"])
    seconds = {tier: launch_seconds_variable(region, tier) for tier in groups}
    earlier = {tier: Variable.get(name) for tier, name in seconds.items()}
    for name in seconds.values():
        Variable.set(name, 20.0, overwrite=True)  # measured before: no launch check
    sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.1})
    # cancelled as the business tier prices its servers: every change of that tier made, its undo longer than the grace
    pricing = sandbox.admin("POST", "faults", {"service": "cvm", "action": "InquiryPriceRunInstances", "skip": 1,
                                               "count": 1, "latency_ms": 15_000})  # fmt: skip
    sandbox.admin("POST", "faults", {"service": "as", "action": "RemoveInstances", "count": 1, "latency_ms": 12_000})
    deployment = deploy("configure-autoscaling", "configure-autoscaling",
                        "flows/configure_autoscaling.py:configure_autoscaling")  # fmt: skip
    try:
        form = cancelled_and_handed_over(sandbox, "configure-autoscaling", deployment, params.model_dump(mode="json"),
                                         key, "the business tier to price its servers", pricing["id"])  # fmt: skip
        assert form.tier == "business" and form.restore_configs is False, form
        cancelled = group_state(region, groups["business"])
        assert cancelled["scheduled actions"] == sorted(["operators-nightly", *plan.schedule_names("business")])
        assert cancelled["alarm policies"] == sorted(["operators-cpu", *plan.policy_names("business")])
        assert (guide["business_server"]["instance_id"], "MANUAL_ATTACHING", True) in cancelled["members"]
        assert {c.tier for c in remembered_group_changes(key)} == {"business"}, "the finished tier's were kept"

        sandbox.admin("DELETE", "faults")
        asg.modify_group.fn(region, business, {"MaxSize": 4})  # by hand, after the run: not the run's to put back
        removed = cleanup_run(form.parameters())  # the handed-over run, as the cleanup deployment runs it
        assert not removed.failed and not removed.scaling_groups and not removed.launch_configurations, removed
        assert removed.servers_detached == [f"{business}: {guide['business_server']['instance_id']}"]
        assert sorted(removed.scheduled_actions) == sorted(f"{business}/{n}" for n in plan.schedule_names("business"))
        assert sorted(removed.alarm_policies) == sorted(f"{business}/{n}" for n in plan.policy_names("business"))
        assert len(removed.fields_restored) == 2 and "TerminationPolicies" in removed.markdown(), removed.markdown()
        assert [u.what for u in removed.fields_left] == [f"MaxSize of {business}"], removed.fields_left
        assert group_state(region, groups["business"]) == {**before, "fields": {**before["fields"], "MaxSize": 4}}
        session = group_state(region, groups["session"])  # the tier that had finished keeps its configuration
        assert session["fields"]["TerminationPolicies"] == ["NEWEST_INSTANCE"]
        assert session["fields"]["MinSize"] == 1 and session["fields"]["MaxSize"] == 5
        assert session["members"] == [(guide["session_server"]["instance_id"], "MANUAL_ATTACHING", True)]
        assert session["scheduled actions"] == sorted(plan.schedule_names("session"))
        assert session["alarm policies"] == sorted(plan.policy_names("session"))
        assert remembered_group_changes(key) == [] and remembered_capacities(key) == []
        assert Artifact.get(f"cleanup-run-{key}") is not None
    finally:
        forget_group_changes(key)  # the session's Prefect server outlives this test's sandbox
        for tier, name in seconds.items():
            if earlier[tier] is None:
                Variable.unset(name)
            else:
                Variable.set(name, earlier[tier], overwrite=True)
