"""Preflight of `configure-autoscaling`: every problem found before anything changes, each with its fix."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect.variables import Variable
from pydantic import BaseModel

from flows.autoscaling_steps import plan
from flows.autoscaling_steps.outcome import launch_seconds_variable
from flows.parameters import AutoScalingTierParameters
from flows.scale_out_steps.preflight import (
    PreflightFailed,
    check_load_balancer,
    choose_source,
    given_load_balancer,
    select_servers,
)
from flows.scale_out_steps.preflight import tier_load_balancer as find_tier_load_balancer
from flows.shared.tier_run import TierRun
from tasks import autoscaling as asg
from tasks import clb
from tasks.cloud import call_json, clients_for
from tasks.cvm import Image, Server, find_images


class TierFacts(BaseModel):
    source: Server
    attachable: list[Server]
    instance_type: str
    forward: asg.ForwardLoadBalancer
    subnet_ids: list[str]
    capacity: plan.Capacity
    group: asg.Group | None
    image: Image | None
    image_name: str
    launch_seconds: float | None


def image_state(region: str, image_id: str) -> str | None:
    found = call_json(clients_for(region).cvm, "DescribeImages", {"ImageIds": [image_id]})["ImageSet"]
    return found[0]["ImageState"] if found else None


def subnet_vpcs(region: str, subnet_ids: list[str]) -> dict[str, str]:
    found = call_json(clients_for(region).vpc, "DescribeSubnets", {"SubnetIds": subnet_ids})["SubnetSet"]
    return {s["SubnetId"]: s["VpcId"] for s in found}


def stored_launch_seconds(region: str, tier: str) -> float | None:
    value = Variable.get(launch_seconds_variable(region, tier), default=None)
    return float(value) if isinstance(value, (int, float, str)) and str(value) else None


def preflight(run: TierRun[AutoScalingTierParameters]) -> TierFacts:
    params = run.params
    scaling = params.autoscaling
    region, tier = run.region, run.tier
    problems: list[str] = []
    lb_type = "INTERNAL" if tier == "session" else "OPEN"
    group = asg.find_group(region, plan.group_name(tier))
    servers = [s for s in select_servers(region, params.source) if s.state == "RUNNING"]
    membership = asg.membership_of(region, [s.instance_id for s in servers])
    launched = {i for i, m in membership.items() if m.creation_type == "AUTO_CREATION"}
    elsewhere = {i for i, m in membership.items() if group is None or m.group_id != group.group_id}
    attachable = [s for s in servers if s.instance_id not in launched and s.instance_id not in elsewhere]
    for instance_id in sorted(elsewhere - launched):
        problems.append(f"{instance_id} is already in scaling group {membership[instance_id].group_id}: detach it")
    if not attachable:
        raise PreflightFailed([*problems, f"no RUNNING {tier} server matches {params.source.describe()} in {region}"])
    balancer = given_load_balancer(params.load_balancer, region, problems) or find_tier_load_balancer(
        params, servers, lb_type, problems
    )
    healthy = (
        {i for i, ok in clb.target_health_of(region, balancer.load_balancer_id).items() if ok} if balancer else set()
    )
    source = choose_source(attachable, healthy) or attachable[0]
    port = params.backend_port()
    listener_id = ""
    if balancer is None:
        problems.append(f"the {tier} servers are behind no {lb_type} CLB: run scale-out-{tier}-tier first")
    else:
        check_load_balancer(balancer, source, lb_type, problems)
        listener = clb.listener_on(region, balancer.load_balancer_id, params.load_balancer.listener_port)
        if listener is None:
            problems.append(
                f"{balancer.load_balancer_id} has no listener on port {params.load_balancer.listener_port}"
                f": give the tier's listener port in load_balancer.listener_port"
            )
        elif listener.protocol != "TCP":
            problems.append(
                f"{balancer.load_balancer_id}'s listener {listener.listener_id} on port {listener.port} "
                f"is {listener.protocol}, the tier's is TCP: give the TCP listener's port"
            )
        else:
            listener_id = listener.listener_id
    forward = asg.ForwardLoadBalancer(
        load_balancer_id=balancer.load_balancer_id if balancer else "", listener_id=listener_id, port=port
    )
    subnet_ids = scaling.subnet_ids or sorted({s.subnet_id for s in attachable})
    if scaling.subnet_ids:
        vpcs = subnet_vpcs(region, scaling.subnet_ids)
        for subnet_id in scaling.subnet_ids:
            if subnet_id not in vpcs:
                problems.append(f"subnet {subnet_id} does not exist in {region}")
            elif vpcs[subnet_id] != source.vpc_id:
                problems.append(
                    f"subnet {subnet_id} is in VPC {vpcs[subnet_id]}, the {tier} servers in "
                    f"{source.vpc_id}: the group's servers must share the tier's VPC"
                )
    if group is not None:
        if group.vpc_id != source.vpc_id:
            problems.append(f"scaling group {group.group_id} is in VPC {group.vpc_id}, the servers in {source.vpc_id}")
        if group.forward and {(f.load_balancer_id, f.listener_id, f.port) for f in group.forward} != {
            (forward.load_balancer_id, forward.listener_id, forward.port)
        }:
            problems.append(
                f"scaling group {group.group_id} forwards to another listener than the tier's "
                f"{forward.load_balancer_id}/{forward.listener_id}:{port}: fix it in the console"
            )
    image: Image | None = None
    image_name = params.image.name or f"tcscale-{tier}-autoscaling"
    if scaling.image_id:
        state = image_state(region, scaling.image_id)
        if state != "NORMAL":
            problems.append(f"image {scaling.image_id} is {state or 'not found'}, not NORMAL: give a NORMAL image")
    else:
        image = next((i for i in find_images(region, image_name) if i.state == "NORMAL"), None)
    cap, more = plan.capacity(scaling, len(attachable))
    problems += more
    launch_seconds = stored_launch_seconds(region, tier)
    if launch_seconds is None and cap.desired + 1 > cap.max_size and not more:
        problems.append(
            f"max_size {cap.max_size} leaves no room to launch one server from the image and time it "
            f"(desired {cap.desired}): raise max_size to at least {cap.desired + 1}"
        )
    if scaling.peak.enabled:
        lead = plan.lead_minutes(scaling.peak, launch_seconds)
        problems += plan.peak_actions(tier, scaling.peak, cap, lead, datetime.now(UTC))[1]
    if problems:
        raise PreflightFailed(problems)
    return TierFacts(
        source=source,
        attachable=attachable,
        instance_type=scaling.instance_type or source.instance_type,
        forward=forward,
        subnet_ids=subnet_ids,
        capacity=cap,
        group=group,
        image=image,
        image_name=image_name,
        launch_seconds=launch_seconds,
    )
