"""The cloud as the fault matrix sees it: the operator's own resources, and a snapshot of everything a run may touch.

The operator's resources are made through the real SDK, as an operator would, before each case:
- an internal CLB `operator-internal` serving the session server on its own listener (TCP 8080 -> port 8080): the
  session scale-out reuses that CLB (it already serves the tier), so its listener and binding sit beside the run's;
- a rule of theirs in each seeded security group (TCP 9000 from 10.9.0.0/16);
- a launch configuration `operator-lc` that no group uses.

`snapshot` is `tests.flows.support.inventory` plus Auto Scaling (launch configurations, groups with their members,
scheduled actions, alarm policies) and every business server's sdk.config bytes, without fields that tick.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from tencentcloud.autoscaling.v20180419 import models as as_models
from tencentcloud.autoscaling.v20180419.autoscaling_client import AutoscalingClient
from tencentcloud.clb.v20180317 import models as clb_models
from tencentcloud.clb.v20180317.clb_client import ClbClient
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312.vpc_client import VpcClient

from sandbox.server import EmbeddedSandbox
from tests.flows.support import business_configs, inventory
from tests.flows.test_preflight import create_load_balancer
from tests.sdk import poll, sdk_client

OPERATOR_PORT = 8080
OPERATOR_RULE = {"Protocol": "TCP", "Port": "9000", "CidrBlock": "10.9.0.0/16", "Action": "ACCEPT"}
OPERATOR_LC = "operator-lc"
# fields that tick with time (timestamps, schedule and alarm bookkeeping), not changes anyone made
VOLATILE = {"created_time", "updated_time", "modify_time", "add_time", "added_at", "created_at", "next_at", "fired"}
VOLATILE |= {"evaluated_until", "breaches", "lows"}


def _request(model: type, body: dict[str, Any]) -> Any:
    request = model()
    request.from_json_string(json.dumps(body))
    return request


def seed_operator_resources(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> dict[str, Any]:
    """The operator's own CLB (with a binding on another port), security-group rules and launch configuration."""
    region, session = guide["region"], guide["session_server"]
    lb_id = create_load_balancer(sandbox, guide, "INTERNAL", guide["vpc"]["vpc_id"], guide["subnet"]["subnet_id"])
    clb = sdk_client(sandbox, ClbClient, region)
    listener = {"LoadBalancerId": lb_id, "Ports": [OPERATOR_PORT], "Protocol": "TCP", "ListenerNames": ["operator"]}
    (listener_id,) = clb.CreateListener(_request(clb_models.CreateListenerRequest, listener)).ListenerIds
    target = {"InstanceId": session["instance_id"], "Port": OPERATOR_PORT}
    register = {"LoadBalancerId": lb_id, "ListenerId": listener_id, "Targets": [target]}
    clb.RegisterTargets(_request(clb_models.RegisterTargetsRequest, register))
    poll(
        lambda: _targets(sandbox, lb_id),
        done=lambda targets: f"{session['instance_id']}:{OPERATOR_PORT}" in targets,
        what="the operator's binding",
    )
    vpc = sdk_client(sandbox, VpcClient, region)
    for group_id in guide["security_groups"].values():
        rule = {**OPERATOR_RULE, "PolicyDescription": "operator: monitoring"}
        body = {"SecurityGroupId": group_id, "SecurityGroupPolicySet": {"Ingress": [rule]}}
        vpc.CreateSecurityGroupPolicies(_request(vpc_models.CreateSecurityGroupPoliciesRequest, body))
    image_id = sandbox.admin("GET", "state")["services"]["cvm"]["instances"][session["instance_id"]]["image_id"]
    lc = {
        "LaunchConfigurationName": OPERATOR_LC,
        "ImageId": image_id,
        "InstanceType": "S5.SMALL1",
        "SecurityGroupIds": [guide["security_groups"]["business"]],
    }
    autoscaling = sdk_client(sandbox, AutoscalingClient, region)
    response = autoscaling.CreateLaunchConfiguration(_request(as_models.CreateLaunchConfigurationRequest, lc))
    return {"load_balancer": lb_id, "listener": listener_id, "launch_configuration": response.LaunchConfigurationId}


def _targets(sandbox: EmbeddedSandbox, lb_id: str) -> list[str]:
    return [t for targets in inventory(sandbox)["load_balancers"].get(lb_id, {}).values() for t in targets]


def _stable(value: Any) -> Any:
    """A state item without the fields that tick (timestamps)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def autoscaling_state(sandbox: EmbeddedSandbox) -> dict[str, Any]:
    state = sandbox.admin("GET", "state")["services"]["as"]
    groups = {}
    for group_id, group in state.get("groups", {}).items():
        members = sorted(group.get("instances", {}))
        keep = ("name", "launch_configuration_id", "min_size", "max_size", "desired", "forward_lbs", "tags")
        groups[group_id] = {**{k: _stable(group.get(k)) for k in keep}, "members": members}
    return {
        "launch_configurations": _stable(state.get("launch_configurations", {})),
        "groups": groups,
        "scheduled_actions": _stable(state.get("scheduled_actions", {})),
        "policies": _stable(state.get("policies", {})),
    }


def names(sandbox: EmbeddedSandbox) -> dict[str, dict[str, str]]:
    """{id: name} of the resources a duplicate would show in: images, CLBs, listeners, launch configs, groups."""
    services = sandbox.admin("GET", "state")["services"]
    lbs = services["clb"]["load_balancers"]
    return {
        "image_names": {i: image["image_name"] for i, image in services["cvm"]["images"].items()},
        "clb_names": {i: lb["load_balancer_name"] for i, lb in lbs.items()},
        "listener_names": {
            f"{i}/{listener_id}": f"{i}/{listener['listener_name']}"
            for i, lb in lbs.items()
            for listener_id, listener in (lb.get("listeners") or {}).items()
        },
        "lc_names": {i: lc["name"] for i, lc in services["as"]["launch_configurations"].items()},
        "group_names": {i: group["name"] for i, group in services["as"]["groups"].items()},
        "instance_tiers": {
            i: instance["tags"].get("tcscale:tier", "")
            for i, instance in services["cvm"]["instances"].items()
            if instance["state"] != "TERMINATED"
        },
    }


def settle_groups(sandbox: EmbeddedSandbox, timeout: float = 20) -> None:
    """Until every scaling group has the members it desires (its activities in flight have finished), at most
    `timeout` s: a run's effect includes the activities it started, an undo's too. A group that never gets there
    shows in the snapshot."""

    def settled() -> bool:
        groups = sandbox.admin("GET", "state")["services"]["as"]["groups"]
        return all(len(group["instances"]) == group["desired"] for group in groups.values())

    with contextlib.suppress(AssertionError):
        poll(settled, what="the scaling groups settled", timeout=timeout)


def snapshot(sandbox: EmbeddedSandbox) -> dict[str, Any]:
    """Everything a run may create or change, and every business server's sdk.config (bytes), once the scaling
    groups have settled."""
    settle_groups(sandbox)
    return {**inventory(sandbox), **autoscaling_state(sandbox), **names(sandbox), "configs": business_configs(sandbox)}


def operator_view(snap: dict[str, Any], operator: dict[str, Any]) -> dict[str, Any]:
    """The operator's resources as a snapshot holds them: their listener's targets, their rules, their LC."""
    lb = snap["load_balancers"].get(operator["load_balancer"], {})
    rules = {
        group_id: [r for r in policies["ingress"] if r.get("description", "").startswith("operator:")]
        for group_id, policies in snap["security_groups"].items()
    }
    return {
        "listener": lb.get(operator["listener"]),
        "rules": rules,
        "launch_configuration": snap["launch_configurations"].get(operator["launch_configuration"]),
    }
