"""`dry_run`: changes nothing, and its plan is what a real run then does.

The sandbox's whole state (`GET /_sandbox/state`) is compared before and after a dry run; then a
real run with the same run key is checked, through the sandbox's state, against every line of the
plan (count, type, zone, project, VPC, subnet, security groups, CLB, listener, bindings, the rule)
and every planned config change (same file, key, before value and bytes; the after value once the
VIP is known).
"""

from __future__ import annotations

import re
from typing import Any

from flows.parameters import ClusterParameters
from flows.scale_out import TierOutcome, scale_out_business_tier, scale_out_cluster, scale_out_session_tier
from sandbox.server import EmbeddedSandbox
from tests.flows.support import business_configs, business_params, session_params

TICKING = {"modify_time", "update_time", "status_time", "offset"}  # timestamps that move on their own


def _without_ticks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ticks(v) for k, v in value.items() if k not in TICKING}
    if isinstance(value, list):
        return [_without_ticks(v) for v in value]
    return value


def whole_state(sandbox: EmbeddedSandbox) -> Any:
    sandbox.admin("POST", "servers/settle")
    return _without_ticks(sandbox.admin("GET", "state"))


def plan_line(outcome: TierOutcome, pattern: str) -> re.Match[str]:
    found = [m for line in outcome.plan if (m := re.fullmatch(pattern, line))]
    assert len(found) == 1, f"no single plan line matches {pattern!r}: {outcome.plan}"
    return found[0]


def assert_real_run_follows_plan(
    sandbox: EmbeddedSandbox, planned: TierOutcome, real: TierOutcome, source_id: str, kind: str
) -> None:
    services = sandbox.admin("GET", "state")["services"]
    instances, images = services["cvm"]["instances"], services["cvm"]["images"]
    balancers, groups = services["clb"]["load_balancers"], services["vpc"]["security_groups"]

    imaged = plan_line(planned, r"image \w+ server (\S+) \((\S+)\) as '(\S+)'")
    assert imaged[1] == source_id and imaged[3] == images[real.image_id]["image_name"]

    launch = plan_line(
        planned,
        r"launch (\d+) x (\S+) in (\S+) \(project (\d+), VPC (\S+), subnet (\S+), security groups ([^)]+)\)",
    )
    count, instance_type, zone, project, vpc_id, subnet_id, sg_list = launch.groups()
    assert len(real.new_instance_ids) == int(count)
    for instance_id in real.new_instance_ids:
        made = instances[instance_id]
        assert (made["instance_type"], made["zone"], str(made["project_id"])) == (instance_type, zone, project)
        assert (made["vpc_id"], made["subnet_id"]) == (vpc_id, subnet_id)
        assert sorted(made["security_group_ids"]) == sg_list.split(", ")

    created = plan_line(planned, rf"create {kind} CLB (\S+) in (\S+)")
    balancer = balancers[real.load_balancer_id]
    expected_type = {"internal": "INTERNAL", "public": "OPEN"}[kind]
    assert (balancer["load_balancer_name"], balancer["vpc_id"]) == created.groups()
    assert balancer["load_balancer_type"] == expected_type

    listener_port, backend_port = map(int, plan_line(planned, r"TCP listener (\d+) -> backend port (\d+)").groups())
    listener = balancer["listeners"][real.listener_id]
    assert (listener["protocol"], listener["port"]) == ("TCP", listener_port)
    assert {t["port"] for t in listener["targets"]} == {backend_port}

    bind = plan_line(planned, r"bind (\S+) and the (\d+) new servers")
    assert bind.groups() == (source_id, count)
    assert sorted(t["instance_id"] for t in listener["targets"]) == sorted([source_id, *real.new_instance_ids])

    admit_port, admit_groups = plan_line(planned, r"admit the VIP on TCP (\d+) in (.+)").groups()
    for group in admit_groups.split(", "):
        rules = [(r["cidr_block"], r["port"], r["action"]) for r in groups[group]["ingress"]]
        assert (f"{real.vip}/32", admit_port, "ACCEPT") in rules


def test_session_dry_run_changes_nothing_and_plans_what_a_run_does(guide, cloud_env):
    before, configs = whole_state(cloud_env), business_configs(cloud_env)
    planned = scale_out_session_tier(session_params(guide, dry_run=True, run_key="plan-session"))
    assert whole_state(cloud_env) == before, "a dry run changed the cloud"
    assert business_configs(cloud_env) == configs, "a dry run changed an sdk.config"
    assert planned.dry_run and planned.image_id is None and not planned.new_instance_ids
    assert "## Plan" in planned.report and "(plan)" in planned.report

    real = scale_out_session_tier(session_params(guide, run_key="plan-session"))

    assert_real_run_follows_plan(cloud_env, planned, real, guide["session_server"]["instance_id"], "internal")
    canary = plan_line(planned, r"rewrite authServerUrl on (\d+) business server\(s\) \(canary (\S+) first\).*")
    assert canary.groups() == ("1", guide["business_server"]["instance_id"])
    assert [c.instance_id for c in planned.changes] == [c.instance_id for c in real.changes]
    for plan, done in zip(planned.changes, real.changes, strict=True):
        assert not plan.applied and done.applied
        same = ("host", "port", "path", "key", "before", "changed", "before_sha256")
        assert plan.model_dump(include=set(same)) == done.model_dump(include=set(same))
        assert plan.after.replace("http://VIP", f"http://{real.vip}") == done.after  # the VIP is known only now


def test_business_dry_run_plans_what_a_run_does(guide, cloud_env):
    before = whole_state(cloud_env)
    planned = scale_out_business_tier(business_params(guide, dry_run=True, run_key="plan-business"))
    assert whole_state(cloud_env) == before, "a dry run changed the cloud"

    real = scale_out_business_tier(business_params(guide, run_key="plan-business"))

    assert_real_run_follows_plan(cloud_env, planned, real, guide["business_server"]["instance_id"], "public")


def test_cluster_dry_run_changes_nothing(guide, cloud_env):
    before, configs = whole_state(cloud_env), business_configs(cloud_env)
    session, business = scale_out_cluster(
        ClusterParameters(session=session_params(guide), business=business_params(guide), dry_run=True)
    )
    assert session.dry_run and business.dry_run and session.plan and business.plan
    assert whole_state(cloud_env) == before and business_configs(cloud_env) == configs
