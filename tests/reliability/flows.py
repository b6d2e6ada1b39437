"""The flows of the fault matrix: how each is prepared, run, and what its intended result is.

Each flow starts from the seeded guide plus what it needs (a scaled tier, a scaling group, a killed run's
leftovers); the operator's resources are added after that (tests/reliability/cloud.py). `intended` lists what is
wrong with a successful run's result (missing, duplicated); a failed run must leave the snapshot as it was.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.autoscaling_steps import plan
from flows.configure_autoscaling import configure_autoscaling
from flows.parameters import Timeouts
from flows.scale_out import scale_out_business_tier, scale_out_cluster, scale_out_session_tier
from flows.set_capacity import set_capacity
from flows.verify_autoscaling import verify_autoscaling
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks.autoscaling_launch_configurations import find_launch_configuration
from tasks.health import auth_url
from tests.flows.autoscaling_support import autoscaling_params
from tests.flows.support import SHORT, business_params, cluster_params, session_params
from tests.flows.test_cleanup import KILLED, cleanup, leave_what_a_killed_run_leaves
from tests.reliability.cloud import OPERATOR_LC

QUIET = {"peak": {"enabled": False}, "alarms": {"enabled": False}}
AS_KEY = "matrix-as-1"


@dataclass
class Knobs:
    """What a case may shorten: the waits of the scale-out steps and of one scaling activity; and the run key (a
    re-run of the crash matrix takes its killed run's)."""

    timeouts: Timeouts = field(default_factory=lambda: SHORT)
    activity_timeout: float = 60
    run_key: str | None = None


Snapshot = dict[str, Any]


@dataclass
class FlowSpec:
    name: str
    prepare: Callable[[EmbeddedSandbox, dict[str, Any]], None]
    run: Callable[[dict[str, Any], Knobs], Any]
    intended: Callable[[Snapshot, Snapshot, Snapshot, Any, dict[str, Any]], list[str]]  # baseline, before, after
    repoints: bool = False  # SSH, restart and health faults apply (the business servers' sdk.config is rewritten)
    waits: tuple[str, ...] = ()  # the Knobs deadlines its steps have


# --- preparations -----------------------------------------------------------------------------------------


def nothing(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> None:
    pass


def scaled_business(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> None:
    scale_out_business_tier(business_params(guide, count=1))


def business_group(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> None:
    scaled_business(sandbox, guide)
    configure_autoscaling(business_autoscaling(guide, Knobs(), quiet=True))


def operators_business_group(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> None:
    """The business tier scaled out, and a scaling group for it the operator made (no mark of any run): named as
    configure-autoscaling names the tier's, forwarding to the tier's listener, launching from the operator's launch
    configuration, bounds 0..4, OLDEST_INSTANCE. configure-autoscaling adopts it and changes it."""
    region = guide["region"]
    tier = scale_out_business_tier(business_params(guide, count=1))
    lc = find_launch_configuration(region, OPERATOR_LC)
    assert lc is not None and tier.load_balancer_id and tier.listener_id
    port = business_params(guide).backend_port()
    forward = {"LoadBalancerId": tier.load_balancer_id, "ListenerId": tier.listener_id,
               "TargetAttributes": [{"Port": port, "Weight": 10}]}  # fmt: skip
    asg.create_group.fn(region, plan.group_name("business"), {
        "LaunchConfigurationId": lc.launch_configuration_id, "MinSize": 0, "MaxSize": 4, "DesiredCapacity": 0,
        "VpcId": guide["vpc"]["vpc_id"], "SubnetIds": [guide["subnet"]["subnet_id"]],
        "ForwardLoadBalancers": [forward], "TerminationPolicies": ["OLDEST_INSTANCE"]}, {})  # fmt: skip


def killed_run(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> None:
    leave_what_a_killed_run_leaves(guide, KILLED)


# --- runs -------------------------------------------------------------------------------------------------


def business_autoscaling(guide: dict[str, Any], knobs: Knobs, quiet: bool = False) -> Any:
    params = autoscaling_params(guide, activity_timeout=knobs.activity_timeout, **(QUIET if quiet else {}))
    params.tiers, params.run_key = ["business"], knobs.run_key or AS_KEY
    return params


def run_capacity(guide: dict[str, Any], knobs: Knobs) -> Any:
    from flows.parameters import CapacityParameters

    scaling = business_autoscaling(guide, knobs, quiet=True)
    business = scaling.business.model_copy(update={"run_key": knobs.run_key})
    return set_capacity(CapacityParameters(tier="business", capacity="+1", business=business))


# --- intended results ---------------------------------------------------------------------------------------


def new_ids(before: Snapshot, after: Snapshot, kind: str) -> list[str]:
    return sorted(set(after[kind]) - set(before[kind]))


def duplicates(before: Snapshot, after: Snapshot) -> list[str]:
    """Resources this run made twice: a new image, CLB, listener, launch configuration or group whose name another
    resource of the same kind already has."""
    found = []
    for kind in ("image_names", "clb_names", "listener_names", "lc_names", "group_names"):
        counts = Counter(after[kind].values())
        found += [f"{kind[:-6]} {name!r} x{counts[name]}" for i, name in after[kind].items()
                  if i not in before[kind] and counts[name] > 1]  # fmt: skip
    return sorted(set(found))


def repointed(before: Snapshot, after: Snapshot, guide: dict[str, Any], vip: str | None) -> list[str]:
    """Every business server that existed before: its sdk.config is the old one with only the URL replaced."""
    params = session_params(guide)
    old = json.dumps(guide["auth_server_url"]).encode()
    new = json.dumps(auth_url(vip or "?", params.load_balancer.listener_port, params.health.auth_path)).encode()
    return [
        f"{i}: sdk.config is neither the intended one nor the old one"
        for i, config in before["configs"].items()
        if config is None or after["configs"].get(i) != config.replace(old, new)
    ]


def unchanged_configs(before: Snapshot, after: Snapshot) -> list[str]:
    return [f"{i}: sdk.config changed" for i, config in before["configs"].items() if after["configs"].get(i) != config]


def session_intended(
    baseline: Snapshot, before: Snapshot, after: Snapshot, outcome: Any, guide: dict[str, Any]
) -> list[str]:
    problems = tier_servers(before, after, outcome, 2)
    return problems + repointed(before, after, guide, outcome.vip)


def business_intended(
    baseline: Snapshot, before: Snapshot, after: Snapshot, outcome: Any, guide: dict[str, Any]
) -> list[str]:
    return tier_servers(before, after, outcome, 2) + unchanged_configs(before, after)


def cluster_intended(
    baseline: Snapshot, before: Snapshot, after: Snapshot, outcomes: Any, guide: dict[str, Any]
) -> list[str]:
    session, business = outcomes
    made = set(new_ids(before, after, "instances"))
    problems = [] if made == {*session.new_instance_ids, *business.new_instance_ids} and len(made) == 2 else [
        f"new servers {sorted(made)}, the run reports {session.new_instance_ids + business.new_instance_ids}"
    ]  # fmt: skip
    return problems + repointed(before, after, guide, session.vip)


def session_tier_kept(before: Snapshot, after: Snapshot, operator: dict[str, Any]) -> list[str]:
    """scale-out-cluster whose business tier failed: the session tier (verified before) stays, complete, and the
    business tier's changes are undone. What differs from `before` is one session scale-out, and only that."""
    problems = []
    made = new_ids(before, after, "instances")
    if len(made) != 1 or after["instance_tiers"][made[0]] != "session":
        problems.append(f"new servers {made}: expected the session tier's one")
    images = [after["image_names"][i] for i in new_ids(before, after, "images")]
    if len(images) != 1 or not images[0].startswith("tcscale-session-"):
        problems.append(f"new images {images}: expected the session tier's one")
    lb = operator["load_balancer"]
    if set(after["load_balancers"]) != set(before["load_balancers"]):
        problems.append("a load balancer was made or removed (the session tier reuses the operator's CLB)")
    elif any(after["load_balancers"][i] != before["load_balancers"][i] for i in before["load_balancers"] if i != lb):
        problems.append("a load balancer other than the session tier's changed")
    elif len(after["load_balancers"][lb]) != len(before["load_balancers"][lb]) + 1:
        problems.append("the session tier's CLB does not have exactly its one new listener")
    for kind in ("launch_configurations", "groups", "scheduled_actions", "policies"):
        if after[kind] != before[kind]:
            problems.append(f"{kind} changed")
    urls = {json.loads(c or b"{}").get("authServerUrl") for c in after["configs"].values()}
    if len(urls) == 1:
        (url,) = urls
        old, new = json.dumps(before_url(before)).encode(), json.dumps(url).encode()
        problems += [
            f"{i}: sdk.config is not the repointed one"
            for i, config in before["configs"].items()
            if config is None or after["configs"].get(i) != config.replace(old, new) or old == new
        ]
    else:
        problems.append(f"the business servers point at {sorted(map(str, urls))}")
    return problems


def before_url(before: Snapshot) -> str:
    (url,) = {json.loads(c or b"{}").get("authServerUrl") for c in before["configs"].values()}
    return str(url)


def tier_servers(before: Snapshot, after: Snapshot, outcome: Any, count: int) -> list[str]:
    made = new_ids(before, after, "instances")
    if made == sorted(outcome.new_instance_ids) and len(made) == count:
        return []
    return [f"new servers {made}, the run reports {outcome.new_instance_ids} (asked for {count})"]


def configured(
    baseline: Snapshot, before: Snapshot, after: Snapshot, outcomes: Any, guide: dict[str, Any]
) -> list[str]:
    groups, lcs = new_ids(before, after, "groups"), new_ids(before, after, "launch_configurations")
    (outcome,) = outcomes
    problems = [] if groups == [outcome.group_id] else [f"new groups {groups}, the run reports {outcome.group_id}"]
    if lcs != [outcome.launch_configuration_id]:
        problems.append(f"new launch configurations {lcs}, the run reports {outcome.launch_configuration_id}")
    return problems + unchanged_configs(before, after)


def configured_existing(
    baseline: Snapshot, before: Snapshot, after: Snapshot, outcomes: Any, guide: dict[str, Any]
) -> list[str]:
    """The operator's group adopted: no new group, the run's launch configuration in it, the tier's servers members."""
    (outcome,) = outcomes
    (group_id,) = before["groups"]
    group = after["groups"].get(group_id) or {}
    problems = [] if outcome.group_id == group_id and not new_ids(before, after, "groups") else [
        f"new groups {new_ids(before, after, 'groups')}, the run reports {outcome.group_id}, the operator's {group_id}"
    ]  # fmt: skip
    if new_ids(before, after, "launch_configurations") != [outcome.launch_configuration_id]:
        problems.append(f"new launch configurations {new_ids(before, after, 'launch_configurations')}")
    if group.get("launch_configuration_id") != outcome.launch_configuration_id:
        problems.append(f"{group_id} launches from {group.get('launch_configuration_id')}")
    servers = sorted(i for i, tier in after["instance_tiers"].items() if tier == "business")
    if group.get("members") != servers:
        problems.append(f"{group_id} has members {group.get('members')}, the tier's servers are {servers}")
    return problems + unchanged_configs(before, after)


def verified(baseline: Snapshot, before: Snapshot, after: Snapshot, outcomes: Any, guide: dict[str, Any]) -> list[str]:
    problems = (
        [] if after["groups"] == before["groups"] else ["the group is not as before the check (desired, members)"]
    )
    if after["instances"] != before["instances"]:
        problems.append(f"servers before {before['instances']}, after {after['instances']}")
    return problems + unchanged_configs(before, after)


def capacity_set(
    baseline: Snapshot, before: Snapshot, after: Snapshot, outcome: Any, guide: dict[str, Any]
) -> list[str]:
    (group_id,) = before["groups"]
    group, was = after["groups"][group_id], before["groups"][group_id]
    problems = [] if group["desired"] == was["desired"] + 1 else [f"desired {was['desired']} -> {group['desired']}"]
    if len(group["members"]) != group["desired"]:
        problems.append(f"{len(group['members'])} members for desired {group['desired']}")
    return problems + unchanged_configs(before, after)


def cleaned_up(baseline: Snapshot, before: Snapshot, after: Snapshot, outcome: Any, guide: dict[str, Any]) -> list[str]:
    """The killed run's leftovers gone, its config put back: the cloud as before that run."""
    return [] if after == baseline else ["the cloud is not as it was before the killed run"]


FLOWS: dict[str, FlowSpec] = {
    spec.name: spec
    for spec in (
        FlowSpec(
            "scale-out-session-tier",
            nothing,
            lambda guide, knobs: scale_out_session_tier(
                session_params(guide, timeouts=knobs.timeouts, run_key=knobs.run_key)
            ),
            session_intended,
            repoints=True,
            waits=("image", "launch", "clb"),
        ),
        FlowSpec(
            "scale-out-business-tier",
            nothing,
            lambda guide, knobs: scale_out_business_tier(
                business_params(guide, timeouts=knobs.timeouts, run_key=knobs.run_key)
            ),
            business_intended,
            waits=("image", "launch", "clb"),
        ),
        FlowSpec(
            "scale-out-cluster",
            nothing,
            lambda guide, knobs: scale_out_cluster(
                cluster_params(guide, knobs.timeouts, count=1).model_copy(update={"run_key": knobs.run_key})
            ),
            cluster_intended,
            repoints=True,
            waits=("image", "launch", "clb"),
        ),
        FlowSpec(
            "configure-autoscaling",
            scaled_business,
            lambda guide, knobs: configure_autoscaling(business_autoscaling(guide, knobs)),
            configured,
            waits=("activity",),
        ),
        FlowSpec(
            "verify-autoscaling",
            business_group,
            lambda guide, knobs: verify_autoscaling(business_autoscaling(guide, knobs, quiet=True)),
            verified,
            waits=("activity",),
        ),
        FlowSpec("set-capacity", business_group, run_capacity, capacity_set, waits=("activity",)),
        FlowSpec("cleanup-run", killed_run, lambda guide, knobs: cleanup(guide), cleaned_up, repoints=True),
    )
}

# The crash matrix only (the fault matrix's configure-autoscaling makes the same calls): configure-autoscaling on a
# group it did not create, whose changes a cleanup-run finds kept per run key, not by a tag.
EXISTING_GROUP = FlowSpec(
    "configure-autoscaling-on-an-existing-group",
    operators_business_group,
    lambda guide, knobs: configure_autoscaling(business_autoscaling(guide, knobs)),
    configured_existing,
    waits=("activity",),
)
CRASH_FLOWS: dict[str, FlowSpec] = {**FLOWS, EXISTING_GROUP.name: EXISTING_GROUP}
