"""Auto Scaling through the flows, end to end on the sandbox: real Prefect engine, real SDK, real servers.

`configure-autoscaling` on the scaled cluster (one scale-out of each tier first), then the lunch peak on the
sandbox clock, the CPU alarms with pinned metrics, `verify-autoscaling` and `set-capacity`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from flows.capacity_plan_steps.prefect_schedules import wanted_schedules
from flows.capacity_plan_steps.steps import CapacityStep
from flows.configure_autoscaling import configure_autoscaling
from flows.parameters import CapacityParameters
from flows.run_forms import CapacityForm
from flows.scale_out import scale_out_cluster
from flows.set_capacity import set_capacity
from flows.shared.capacity_chart import driver_of
from flows.verify_autoscaling import verify_autoscaling
from sandbox.cvm import prices
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks import autoscaling_policies, clb
from tasks.cvm import describe_servers
from tasks.health import auth_url, probe_app_up, probe_auth, probe_session_reach
from tests.flows.autoscaling_support import advance_to, autoscaling_params, minutes, sandbox_now
from tests.flows.support import cluster_params, guest_status
from tests.sdk import load, poll


@pytest.fixture
def scaled(guide: dict[str, Any], cloud_env: EmbeddedSandbox) -> dict[str, Any]:
    """The guide after the scale-out: each tier two servers behind its CLB."""
    session, business = scale_out_cluster(cluster_params(guide, count=1))
    return {"session": session, "business": business}


def settled(region: str, group_id: str, desired: int, timeout: float = 60) -> asg.Group:
    def read() -> asg.Group | None:
        group = asg.describe_group(region, group_id)
        return group if group and group.settled and group.desired == desired else None

    found = poll(read, what=f"{group_id} settled at {desired}", timeout=timeout)
    assert found is not None
    return found


def test_configure_autoscaling_end_to_end(guide, cloud_env, scaled):
    region = guide["region"]
    params = autoscaling_params(guide)
    first = {o.tier: o for o in configure_autoscaling(params)}
    for outcome in first.values():
        assert outcome.group_id and outcome.differences, outcome
        assert any(d.startswith("create scaling group") for d in outcome.differences)
        assert outcome.launch_seconds is not None and outcome.lead_minutes == 5 + -(-outcome.launch_seconds // 60)
        members = asg.members(region, outcome.group_id)
        attached = [m for m in members if m.creation_type == "MANUAL_ATTACHING"]
        assert len(attached) == 2 and all(m.protected for m in attached), members
        assert len(members) == 2, "the launch check's server was removed again"
        assert outcome.cost is not None and 0 < outcome.cost.saving_percent < 100
        # priced by the cloud's quote for the tier's type (the seed's S5.SMALL2), not a typed price
        assert "InquiryPriceRunInstances" in outcome.cost.price_source
        assert outcome.cost.hourly_price == round(prices.hourly("S5.SMALL2"), 2)
        assert "Monthly cost" in outcome.report and "Difference applied" in outcome.report
        assert "before the peak starts" in outcome.report
        assert len(outcome.activities) >= 2 and all(a.status == "SUCCESSFUL" for a in outcome.activities)

    # a second run changes nothing, and says so
    second = configure_autoscaling(autoscaling_params(guide))
    for outcome in second:
        assert outcome.differences == [], outcome.differences
        assert "No change" in outcome.report

    # the lunch peak: the scale-out fires lead minutes before 11:00; 2 more servers per tier healthy by 11:00
    groups = {tier: asg.describe_group(region, o.group_id) for tier, o in first.items()}
    out_action = first["business"].schedule[0]
    eleven = out_action.start_time  # the first firing, lead minutes before 11:00
    from datetime import datetime

    fire = datetime.fromisoformat(eleven)
    assert (fire + timedelta(minutes=first["business"].lead_minutes or 0)).strftime("%H:%M") == "11:00"
    advance_to(cloud_env, fire)
    for tier, group in groups.items():
        assert group is not None
        grown = settled(region, group.group_id, group.desired + 2)
        new = [m for m in asg.members(region, group.group_id) if m.creation_type == "AUTO_CREATION"]
        assert len(new) == 2 and all(m.state == "IN_SERVICE" for m in new)
        fwd = grown.forward[0]
        bound = clb.registered_targets(region, fwd.load_balancer_id, fwd.listener_id)
        targets = clb.targets_on([m.instance_id for m in new], fwd.port)
        assert set(targets) <= bound, bound
        clb.wait_targets_healthy.fn(region, fwd.load_balancer_id, fwd.listener_id, targets, 30)
        health = params.business.health
        if tier == "business":  # the real app's own routes on each new server: up, and reaching the session tier
            for server in describe_servers(region, [m.instance_id for m in new]):
                assert probe_app_up(server.private_ip, 5757, health).ok
                reach = probe_session_reach(server.private_ip, 5757, health)
                assert reach.ok and "60012" in reach.detail, reach
                loaded = guest_status(cloud_env, server.instance_id)["loaded"]["authServerUrl"]
                assert loaded.startswith(f"http://{scaled['session'].vip}")
        else:  # the session service answers the MA protocol through the VIP the new servers are healthy behind
            url = auth_url(scaled["session"].vip or "", params.session.load_balancer.listener_port)
            assert probe_auth(url, 5).ok
    assert sandbox_now(cloud_env) < fire + timedelta(minutes=first["business"].lead_minutes or 0)

    # 13:00: the peak servers go, the protected ones stay
    advance_to(cloud_env, fire.replace(hour=13, minute=0))
    for group in groups.values():
        assert group is not None
        settled(region, group.group_id, group.desired)
        members = asg.members(region, group.group_id)
        assert sorted(m.creation_type for m in members) == ["MANUAL_ATTACHING", "MANUAL_ATTACHING"], members


def test_alarms_verify_and_set_capacity(guide, cloud_env, scaled):
    """The business tier alone: CPU alarm out and, after the cooldown, in; verify-autoscaling; set-capacity."""
    region = guide["region"]
    params = autoscaling_params(guide, peak={"enabled": False})
    params.tiers = ["business"]
    (outcome,) = configure_autoscaling(params)
    group_id = outcome.group_id or ""
    assert not any("scheduled action" in d for d in outcome.differences)
    assert [p.name for p in autoscaling_policies.alarm_policies(region, group_id)] == [
        "tcscale-business-cpu-high",
        "tcscale-business-cpu-low",
    ]

    # > 70 % for 5 minutes: +1; then < 20 % for 15 minutes (after the cooldown): -1, never a protected server
    pin = {"auto_scaling_group_id": group_id, "metric": "CPU_UTILIZATION"}
    cloud_env.admin("POST", "metrics", {**pin, "value": 90})
    minutes(cloud_env, 6)
    settled(region, group_id, 3)
    cloud_env.admin("POST", "metrics", {**pin, "value": 5})
    minutes(cloud_env, 16)
    settled(region, group_id, 2)
    cloud_env.admin("DELETE", "metrics")
    members = asg.members(region, group_id)
    assert sorted(m.creation_type for m in members) == ["MANUAL_ATTACHING", "MANUAL_ATTACHING"], members
    causes = [a.cause for a in asg.activities(region, group_id)]
    assert any("tcscale-business-cpu-high" in c for c in causes) and any(
        "tcscale-business-cpu-low" in c for c in causes
    )
    drivers = [driver_of(a, sandbox_now(cloud_env)) for a in asg.activities(region, group_id)]
    assert ("CPU_UTILIZATION", 90.0, 70.0) in [(d.metric, d.value, d.threshold) for d in drivers if d], drivers

    # verify-autoscaling: desired + 1, healthy, restored
    verified = verify_autoscaling(params)
    for outcome in verified:
        assert len(outcome.new_instance_ids) == 1 and outcome.activities
        assert "SUCCESSFUL" in outcome.report
        # the report's chart, as its waits saw the group and the CLB: one more, healthy, and back
        assert "## Capacity in time\n\n![business tier: " in outcome.report
        assert "desired 2 → 3 → 2; in service 2 → 3 → 2; healthy behind the CLB 2 → 3 → 2." in outcome.report
        assert "CPU: the mean CPUUsage of 3 server(s) from Cloud Monitor" in outcome.report  # one read, its line

    # set-capacity: +1 waits and verifies; 0 is clamped to the group's minimum
    business = autoscaling_params(guide).business
    raised = set_capacity(CapacityParameters(tier="business", capacity="+1", business=business))
    assert raised.activities and all(a.status == "SUCCESSFUL" for a in raised.activities)
    assert len(raised.members) == 3
    assert "data:image/svg+xml;base64," in raised.report and "desired 2 → 3; in service 2 → 3" in raised.report
    for m in asg.members(region, raised.group_id or ""):
        (server,) = [s for s in cloud_env.admin("GET", "servers")["servers"] if s["instance_id"] == m.instance_id]
        assert probe_app_up(server["private_ip"], 5757, business.health).ok
    lowered = set_capacity(CapacityParameters(tier="business", capacity="0", business=business))
    assert "outside" in lowered.capacity_message and "set to 2" in lowered.capacity_message
    settled(region, lowered.group_id or "", 2)

    # a plan's step as plan-capacity writes it in Prefect (lunch_peak_by: prefect) holds its servers as its Auto
    # Scaling scheduled action does (MinSize = desired = the step's): the low CPU alarm cannot take them away
    def plan_step(servers: int) -> CapacityParameters:
        (schedule,) = wanted_schedules("business", {"daily": [CapacityStep(minute=690, servers=servers)]}, 20)
        form = {**schedule.parameters["params"], "overrides": business.model_dump(mode="json")}
        return CapacityForm.model_validate(form).parameters()  # as the deployment's flow reads the schedule's

    set_capacity(plan_step(3))
    cloud_env.admin("POST", "metrics", {**pin, "value": 5})
    minutes(cloud_env, 16)
    held = settled(region, group_id, 3)
    assert held.min_size == 3, held
    set_capacity(plan_step(2))  # the next step down puts the floor back
    cloud_env.admin("DELETE", "metrics")
    assert settled(region, group_id, 2).min_size == 2


def test_real_load_through_the_public_clb_scales_out_then_in(guide, cloud_env, scaled):
    """Bounded real HTTP load (100 requests, loopback) through the business tier's public CLB raises the servers'
    CPU over a low threshold: the alarm adds a server; once the load stops, the low alarm removes it again."""
    region = guide["region"]
    alarms = {
        "high": {"threshold": 3, "minutes": 1, "adjustment": 1, "cooldown": 60},
        "low": {"threshold": 2, "minutes": 2, "adjustment": -1, "cooldown": 60},
    }
    params = autoscaling_params(guide, peak={"enabled": False}, alarms=alarms)
    params.tiers = ["business"]
    (outcome,) = configure_autoscaling(params)
    group_id = outcome.group_id or ""
    vip, port = scaled["business"].vip, params.business.load_balancer.listener_port
    before = cloud_env.admin("GET", "metrics")["servers"]
    load(f"http://{vip}:{port}/login", 100)  # a new connection each: the CLB spreads them over both servers
    after = cloud_env.admin("GET", "metrics")["servers"]
    served = {i: after[i]["requests"] - before.get(i, {}).get("requests", 0) for i in after}
    assert sum(served.values()) >= 100 and len([n for n in served.values() if n > 0]) >= 2, served
    # >= 25 requests a server in one minute: CPU 1 + 100 x 25 x 0.05 / 60 = 3.1 % > 3 (the sandbox's documented cost)
    minutes(cloud_env, 2.1)
    settled(region, group_id, 3)
    minutes(cloud_env, 4)  # no load: CPU 1 % < 2 for 2 minutes, after the 60 s cooldown
    settled(region, group_id, 2)
    members = asg.members(region, group_id)
    assert sorted(m.creation_type for m in members) == ["MANUAL_ATTACHING", "MANUAL_ATTACHING"], members


def test_a_new_image_is_a_new_launch_configuration_checked_by_a_launch(guide, cloud_env, scaled):
    params = autoscaling_params(guide, peak={"enabled": False})
    params.tiers = ["business"]
    (first,) = configure_autoscaling(params)
    params.business.autoscaling.image_id = scaled["business"].image_id  # the scale-out's image of a business server
    (second,) = configure_autoscaling(params)
    text = "\n".join(second.differences)
    assert f"create launch configuration tcscale-business-{scaled['business'].image_id}" in text
    assert f"modify scaling group {first.group_id}: {{'LaunchConfigurationId'" in text
    assert "launch one server from the launch configuration" in text and second.launch_seconds is not None
    group = asg.describe_group(guide["region"], first.group_id or "")
    assert group is not None and group.launch_configuration_id == second.launch_configuration_id
    assert group.launch_configuration_id != first.launch_configuration_id
    (third,) = configure_autoscaling(params)
    assert third.differences == []
    # a dry run shows the difference a changed declaration would apply, and applies none of it
    params.dry_run = True
    params.business.autoscaling.max_size = 9
    (planned,) = configure_autoscaling(params)
    assert planned.differences == [f"set {first.group_id} MaxSize {group.max_size} -> 9"], planned.differences
    assert "Difference would apply" in planned.report
    assert (asg.describe_group(guide["region"], first.group_id or "") or group).max_size == group.max_size


@pytest.mark.slow
def test_configure_and_set_capacity_on_the_realistic_clock(guide, cloud_env, scaled):
    """Images, launches and activities take their (scaled) real times; new activities are listed late."""
    cloud_env.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.05})
    params = autoscaling_params(guide, peak={"enabled": False})
    params.tiers = ["business"]
    (outcome,) = configure_autoscaling(params)
    assert outcome.launch_seconds is not None and outcome.launch_seconds > 1.5  # 30 s launch x 0.05, then boot
    raised = set_capacity(CapacityParameters(tier="business", capacity="+2", business=params.business))
    assert len(raised.members) == 4
    lowered = set_capacity(CapacityParameters(tier="business", capacity="-2", business=params.business))
    assert len(lowered.members) == 2
