"""What a scaling group's servers must pass, and the capacity changes that are waited for and checked.

A server counts when the group lists it IN_SERVICE, it is a target of the tier's listener on the backend port,
the CLB finds it healthy, and the real apps answer (business: `/login` and `/user` on the server itself and
through the VIP; session: the MA protocol through the VIP, the CLB's check hitting each server's port).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flows.autoscaling_steps import plan
from flows.parameters import AutoScalingTierParameters
from flows.scale_out_steps.verify import VerificationFailed, until_ok
from flows.shared.ledger import (
    CapacityChange,
    Left,
    forget_capacity,
    remember_capacity,
    remembered_capacity,
    restore_capacity,
)
from flows.shared.tier_run import TierRun
from tasks import autoscaling as asg
from tasks import clb
from tasks.cvm import Server, describe_servers
from tasks.health import Probe, auth_url, probe_app_up, probe_auth, probe_session_reach


class CapacityRefused(Exception):
    pass


def forward_of(group: asg.Group) -> asg.ForwardLoadBalancer:
    if not group.forward:
        raise VerificationFailed(f"scaling group {group.group_id} has no CLB listener (ForwardLoadBalancers)")
    return group.forward[0]


def capacity_seen(run: TierRun[AutoScalingTierParameters], group: asg.Group) -> asg.GroupObserver:
    """What the waits on `group` see goes into the report's capacity chart (no request of its own)."""
    capacity = run.record.capacity
    if group.forward:
        fwd = group.forward[0]
        capacity.title = f"{run.tier} tier: {group.group_id} behind {fwd.load_balancer_id}/{fwd.listener_id}"

    def seen(described: asg.Group | None, new: list[asg.Activity]) -> None:
        capacity.observe_group(described)
        capacity.observe_activities(new)

    return seen


def health_seen(run: TierRun[AutoScalingTierParameters], group: asg.Group) -> Callable[[dict[clb.Target, bool]], None]:
    port = forward_of(group).port
    return lambda health: run.record.capacity.observe_health(health, port)


def sample_health(run: TierRun[AutoScalingTierParameters], group: asg.Group) -> None:
    """One DescribeTargetHealth of the group's listener, for the chart (before and after a capacity change)."""
    if group.forward:
        fwd = group.forward[0]
        health_seen(run, group)(listener_health(run.region, fwd.load_balancer_id, fwd.listener_id))


def change_capacity_undoably(
    run: TierRun[AutoScalingTierParameters],
    group: asg.Group,
    target: int,
    why: str,
    asked: str = "",
    min_size: int | None = None,
) -> list[asg.Activity]:
    """`change_capacity`, kept before it is made: per run key in a Prefect Variable (`remember_capacity`, what a re-run
    of the key and `cleanup-run` find once this process is gone) and in the ledger: on a failure (of its activity, of a
    later check, or a lost answer) the undo puts the desired capacity back, only while the group still desires
    `target`, what this run wrote; a value set since by anyone else stays and is reported. With `min_size`, the
    group's minimum is written with it and put back the same way."""
    earlier = remembered_capacity(run.key, group.group_id)
    # a re-run writing what its killed run wrote keeps that run's original
    again = earlier is not None and earlier.target == target
    previous = earlier.previous if earlier is not None and again else group.desired
    change = CapacityChange(region=run.region, group_id=group.group_id, previous=previous, target=target, asked=asked,
                            tier=run.tier)  # fmt: skip
    if min_size is not None:
        was = earlier.previous_min if earlier is not None and again else None
        change.previous_min, change.target_min = group.min_size if was is None else was, min_size
    remember_capacity(run.key, change)
    timeouts = run.params.timeouts

    def restore() -> bool | Left:
        restored = restore_capacity(change, timeouts.undo, timeouts.poll)
        forget_capacity(run.key, group.group_id)  # never put back again over a later value
        return restored

    run.ledger.add(
        change.described(),
        restore,
        f"set the desired capacity of {group.group_id} back to {previous} if it is still {target}"
        + (f", its minimum to {change.previous_min} if it is still {min_size}" if min_size is not None else ""),
    )
    return change_capacity(run, group, target, why, min_size)


def change_capacity(
    run: TierRun[AutoScalingTierParameters], group: asg.Group, target: int, why: str, min_size: int | None = None
) -> list[asg.Activity]:
    """ModifyDesiredCapacity to `target` (and MinSize to `min_size`) and wait for every activity it starts to be
    SUCCESSFUL."""
    timeout = run.params.autoscaling.activity_timeout
    with run.step(f"{why}: desired capacity {group.desired} -> {target}, activities SUCCESSFUL"):
        known = activity_ids(run.region, group.group_id)
        sample_health(run, group)
        run.record.capacity.drove(f"{why}: {group.desired} → {target}")
        asg.modify_desired(run.region, group.group_id, target, min_size)
        new = asg.wait_new_activities(
            run.region, group.group_id, known, timeout, run.params.timeouts.poll, capacity_seen(run, group)
        )
        sample_health(run, group)
        run.record.add("scaling-group", group.group_id, created=False, detail=f"desired {group.desired} -> {target}")
        return new


def check_servers(
    run: TierRun[AutoScalingTierParameters], group: asg.Group, instance_ids: list[str], vip: str
) -> list[Probe]:
    """IN_SERVICE, bound on the listener at the backend port, healthy for the CLB, the real apps answering."""
    fwd = forward_of(group)
    timeouts = run.params.timeouts
    with run.step(f"{len(instance_ids)} server(s) IN_SERVICE, bound to {fwd.listener_id}:{fwd.port}, healthy"):
        problems = listing_problems(run.region, group.group_id, fwd, instance_ids)
        if problems:
            raise VerificationFailed("; ".join(problems))
        clb.wait_targets_healthy(
            run.region,
            fwd.load_balancer_id,
            fwd.listener_id,
            clb.targets_on(instance_ids, fwd.port),
            timeouts.health,
            timeouts.poll,
            health_seen(run, group),
        )
        run.record.probes += [
            Probe(target=f"{i} behind {fwd.load_balancer_id}/{fwd.listener_id}", ok=True, detail="CLB: healthy")
            for i in instance_ids
        ]
    return app_checks(run, instance_ids, vip)


# --- reads (each retried on throttling and network errors by tasks/cloud.py's `call`) --------------------------


def listing_problems(region: str, group_id: str, fwd: asg.ForwardLoadBalancer, instance_ids: list[str]) -> list[str]:
    """What keeps the servers from counting: not IN_SERVICE in the group, not bound on the listener's port."""
    states = {m.instance_id: m for m in asg.members(region, group_id)}
    problems = [
        f"{i} is {states[i].state if i in states else 'not a member'} in {group_id}"
        for i in instance_ids
        if i not in states or states[i].state != "IN_SERVICE"
    ]
    targets = clb.registered_targets(region, fwd.load_balancer_id, fwd.listener_id)
    return problems + [
        f"{i} is not bound to {fwd.load_balancer_id}/{fwd.listener_id} on port {fwd.port}"
        for i in instance_ids
        if clb.Target(instance_id=i, port=fwd.port) not in targets
    ]


def member_ids(region: str, group_id: str) -> set[str]:
    return {m.instance_id for m in asg.members(region, group_id)}


def protected_ids(region: str, group_id: str) -> set[str]:
    return {m.instance_id for m in asg.members(region, group_id) if m.protected}


def activity_ids(region: str, group_id: str) -> set[str]:
    return {a.activity_id for a in asg.activities(region, group_id)}


def listener_health(region: str, load_balancer_id: str, listener_id: str) -> dict[clb.Target, bool]:
    return clb.target_health(region, load_balancer_id, listener_id)


def servers_of(region: str, instance_ids: list[str]) -> list[Server]:
    return describe_servers(region, instance_ids)


def app_checks(run: TierRun[AutoScalingTierParameters], instance_ids: list[str], vip: str) -> list[Probe]:
    params = run.params
    check, listener_port = params.health, params.load_balancer.listener_port
    probes: dict[str, Callable[[], Probe]] = {}
    if run.tier == "business":
        port = check.port_for(params.runtime_profile())
        for server in servers_of(run.region, instance_ids) if instance_ids else []:
            host = server.private_ip
            probes[f"{server.instance_id} app up"] = lambda host=host: probe_app_up(host, port, check)
            probes[f"{server.instance_id} reaches the session tier"] = lambda host=host: probe_session_reach(
                host, port, check
            )
        probes[f"{vip}:{listener_port} app up"] = lambda: probe_app_up(vip, listener_port, check)
    else:
        url = auth_url(vip, listener_port, check.auth_path)
        probes[url] = lambda: probe_auth(url, check.timeout_seconds)
    with run.step(f"the real apps answer ({len(probes)} probe(s))"):
        return until_ok(run, probes, f"the {run.tier} apps")


def vip_of(run: TierRun[AutoScalingTierParameters], group: asg.Group) -> str:
    balancer = clb.describe_load_balancer(run.region, forward_of(group).load_balancer_id)
    if balancer is None or not balancer.vip:
        raise VerificationFailed(f"the CLB {forward_of(group).load_balancer_id} of {group.group_id} is gone")
    return balancer.vip


class LaunchCheck:
    """desired + 1, the new server healthy (timed), desired restored: the image starts the apps at boot."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.new_ids: list[str] = []
        self.activities: list[asg.Activity] = []

    def run(self, run: TierRun[AutoScalingTierParameters], group: asg.Group) -> LaunchCheck:
        timeout = run.params.autoscaling.activity_timeout
        poll = run.params.timeouts.poll
        group = asg.wait_settled(run.region, group.group_id, timeout, poll, capacity_seen(run, group))
        group = self.put_back_a_killed_check(run, group)
        if group.desired + 1 > group.max_size:
            raise CapacityRefused(
                f"{group.group_id} is at its max size {group.max_size}: a launch check needs one more; raise max_size"
            )
        before = member_ids(run.region, group.group_id)
        protected = protected_ids(run.region, group.group_id)
        vip = vip_of(run, group)
        grown = group.model_copy(update={"desired": group.desired + 1})
        started = time.monotonic()
        self.activities += change_capacity_undoably(run, group, grown.desired, "launch one server from the image")
        self.new_ids = sorted(member_ids(run.region, group.group_id) - before)
        check_servers(run, group, self.new_ids, vip)
        self.seconds = time.monotonic() - started
        self.activities += change_capacity(run, grown, group.desired, "restore the desired capacity")
        forget_capacity(run.key, group.group_id)  # put back: nothing left for a re-run or cleanup-run
        after = member_ids(run.region, group.group_id)
        if not protected <= after:
            raise VerificationFailed(f"the scale-in removed protected servers: {sorted(protected - after)}")
        return self

    def put_back_a_killed_check(self, run: TierRun[AutoScalingTierParameters], group: asg.Group) -> asg.Group:
        """A run of this key killed after its + 1 left the group grown (its kept change says so, and the group still
        desires what it wrote): back to the original first, so this check measures from it and restores to it."""
        earlier = remembered_capacity(run.key, group.group_id)
        if earlier is None or earlier.target == earlier.previous or group.desired != earlier.target:
            return group
        self.activities += change_capacity(run, group, earlier.previous, "put back the + 1 of a killed run of this key")
        return group.model_copy(update={"desired": earlier.previous})


def activity_table(items: list[asg.Activity]) -> list[str]:
    lines = ["| activity | type | status | cause | servers | start | end |", "|---|---|---|---|---|---|---|"]
    for a in items:
        servers = ", ".join(f"{i} {s}" for i, s in a.instances.items())
        lines.append(
            f"| {a.activity_id} | {a.type} | {a.status} | {a.cause[:120]} | {servers} | {a.start_time} | {a.end_time} |"
        )
    return lines


def existing_group(run: TierRun[AutoScalingTierParameters]) -> asg.Group:
    group = asg.find_group(run.region, plan.group_name(run.tier))
    if group is None:
        raise LookupError(f"no scaling group {plan.group_name(run.tier)} in {run.region}: run configure-autoscaling")
    capacity_seen(run, group)(group, [])
    return group
