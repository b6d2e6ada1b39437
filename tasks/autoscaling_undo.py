"""The undo of a run's changes to scaling groups: its groups emptied and deleted, the servers it attached detached
(and bound to their CLB listener again), a desired capacity or group fields put back only while they still hold the
values the run wrote (never over someone else's later change).

A desired-capacity write of this process whose answer was lost may still land: a restore waits it out first
(tasks/lost_writes.py).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import autoscaling as asg
from tasks import clb
from tasks.autoscaling_models import ForwardLoadBalancer, Group
from tasks.cloud import call_json, clients_for, retrying
from tasks.lost_writes import outlast


@task(name="delete-scaling-group", cache_policy=NO_CACHE)
@retrying()  # ResourceInUse.ActivityInProgress / InstanceInGroup are retried, as Terraform does
def delete_group(region: str, group_id: str, timeout: float, poll: float = 2.0) -> bool:
    """Empty the group (min = desired = 0: the servers it launched are terminated), then delete it. Servers
    attached to it are not its to take: detaching them deregisters them from the group's CLB listener, bindings
    they had before the attach (`detach` binds them again). While any is attached it stops, naming them."""
    if asg.wait_idle(region, group_id, timeout, poll) is None:
        return False
    attached = [m.instance_id for m in asg.members(region, group_id) if m.creation_type == "MANUAL_ATTACHING"]
    if attached:
        raise RuntimeError(
            f"{group_id} still has attached servers {', '.join(attached)}: remove them from it and bind them to its "
            "CLB listener again (as before the attach), then delete the group"
        )
    asg.modify_group.fn(region, group_id, {"MinSize": 0, "DesiredCapacity": 0})
    asg.wait_settled.fn(region, group_id, timeout, poll)
    call_json(clients_for(region).autoscaling, "DeleteAutoScalingGroup", {"AutoScalingGroupId": group_id})
    return True


@task(name="delete-tagged-scaling-groups", cache_policy=NO_CACHE)
def delete_tagged_groups(region: str, tags: dict[str, str], timeout: float, poll: float = 2.0) -> list[str]:
    """Empty and delete the scaling groups carrying `tags` (a run's own, whatever became of its create's answer)."""
    return [g.group_id for g in asg.tagged_groups(region, tags) if delete_group.fn(region, g.group_id, timeout, poll)]


@task(name="restore-desired-capacity", cache_policy=NO_CACHE)
def restore_desired(
    region: str,
    group_id: str,
    written: int,
    previous: int,
    timeout: float,
    poll: float = 2.0,
    floor: tuple[int, int] | None = None,
) -> bool:
    """Undo a ModifyDesiredCapacity: back to `previous` only while the group still desires `written` (the value the
    run set), never over someone else's later change; waits for the activities it starts. A write of this process
    whose answer was lost is waited out first: it may land after the run gave up on it. `floor` (MinSize written,
    MinSize before): the minimum the same write set goes back with it, only while it still holds what was written."""
    outlast(("desired", region, group_id), unless=previous)
    group = asg.describe_group(region, group_id)
    if group is None or group.desired != written:
        return False
    known = {a.activity_id for a in asg.activities(region, group_id)}
    min_size = floor[1] if floor is not None and group.min_size == floor[0] else None
    lowest = group.min_size if min_size is None else min_size  # a minimum set since stays: desired not below it
    asg.modify_desired.fn(region, group_id, max(previous, lowest), min_size)
    asg.wait_new_activities.fn(region, group_id, known, timeout, poll)
    return True


@task(name="restore-scaling-group", cache_policy=NO_CACHE)
def restore_group(region: str, group_id: str, written: dict[str, Any], previous: dict[str, Any]) -> bool:
    """Undo a ModifyAutoScalingGroup: each field back to `previous` only while it still holds the value the run
    `written` (a later change of that field by anyone else stays)."""
    if "DesiredCapacity" in written:  # a lost write of it may land after the run gave up on it: waited out first
        outlast(("desired", region, group_id), unless=previous["DesiredCapacity"])
    group = asg.describe_group(region, group_id)
    if group is None:
        return False
    back = {k: previous[k] for k in still_written(group, written)}
    if back:
        asg.modify_group.fn(region, group_id, back)
    return bool(back)


def group_fields(group: Group) -> dict[str, Any]:
    """The group's values under the names ModifyAutoScalingGroup takes."""
    return {
        "LaunchConfigurationId": group.launch_configuration_id,
        "MinSize": group.min_size,
        "MaxSize": group.max_size,
        "DesiredCapacity": group.desired,
        "SubnetIds": group.subnet_ids,
        "TerminationPolicies": group.termination_policies,
    }


def still_written(group: Group, written: dict[str, Any]) -> list[str]:
    """The fields of `written` the group still holds (the others were set since by someone else)."""
    now = group_fields(group)
    return [k for k, v in written.items() if _same(now.get(k), v)]


def _same(a: Any, b: Any) -> bool:
    return sorted(a) == sorted(b) if isinstance(a, list) and isinstance(b, list) else a == b


def detach(
    region: str,
    group_id: str,
    instance_ids: list[str],
    fwd: ForwardLoadBalancer | None,
    was_bound: list[clb.Target],
    timeout: float,
    poll: float = 2.0,
) -> bool:
    """Undo an attach: out of the group (detaching deregisters them from the group's listener), then the (instance,
    port) pairs of `fwd` they had before bound again (the tier's CLB served them). The attach may still be under
    way: the group's activity is waited for first; each wait at most `timeout` s."""
    group = asg.wait_idle(region, group_id, timeout, poll)
    present = [m.instance_id for m in asg.members(region, group_id) if m.instance_id in instance_ids] if group else []
    if group is not None and present:
        asg.set_protection.fn(region, group_id, present, False)
        if group.min_size > group.desired - len(present):
            asg.modify_group.fn(region, group_id, {"MinSize": max(0, group.desired - len(present))})
        asg.wait_activity.fn(region, asg.remove_instances.fn(region, group_id, present), timeout, poll)
    rebound = clb.register_targets.fn(region, fwd.load_balancer_id, fwd.listener_id, was_bound, timeout) if fwd else []
    return bool(present or rebound)
