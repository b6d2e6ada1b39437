"""`set-capacity`: a tier's desired capacity (absolute, +n, -n), clamped to its scaling group's bounds."""

from __future__ import annotations

from prefect import flow

from flows.autoscaling_steps import lateness
from flows.autoscaling_steps.checks import change_capacity_undoably, check_servers, existing_group, member_ids, vip_of
from flows.autoscaling_steps.outcome import AutoScalingOutcome, publish
from flows.declaration import declared, load_declaration
from flows.parameters import CapacityParameters
from flows.shared.ledger import remembered_capacity
from flows.shared.tier_run import this_flow_run_id, tier_run
from tasks import autoscaling as asg


def clamp(target: int, group: asg.Group, floor: bool = False) -> tuple[int, str]:
    """Within the group's bounds; a `floor` moves the minimum itself, so only the maximum bounds it."""
    lowest = 0 if floor else group.min_size
    if target < lowest or target > group.max_size:
        clamped = min(max(target, lowest), group.max_size)
        return clamped, (
            f"asked for {target} servers, outside {group.group_id}'s bounds [{lowest}, "
            f"{group.max_size}]: set to {clamped} (change the bounds with configure-autoscaling)"
        )
    return target, ""


def planned_target(key: str, params: CapacityParameters, group: asg.Group) -> tuple[int, str]:
    """The target of this run key: the one its first run kept before changing (a re-run of a relative change never
    counts from a capacity that change already reached), else `capacity` counted from the group's and clamped."""
    kept = remembered_capacity(key, group.group_id)
    if kept is None:
        return clamp(params.target(group.desired), group, params.floor)
    if kept.asked != params.capacity:
        raise ValueError(
            f"run key {key} already set the desired capacity of {group.group_id} for {kept.asked!r} "
            f"({kept.previous} -> {kept.target}), not {params.capacity!r}: give another run key for another change"
        )
    return kept.target, ""


@flow(name="set-capacity", description="调整期望实例数: a tier's desired capacity (4, +2, -1), clamped to the bounds")
def set_capacity(params: CapacityParameters) -> AutoScalingOutcome:
    declaration = load_declaration()
    params = declared(params)
    reason = lateness.late_reason(params.late_after_minutes) or lateness.peak_elsewhere_reason(params.tier, declaration)
    if reason:
        return lateness.skip("set-capacity", params.tier, this_flow_run_id(), params.dry_run, reason)
    tp = params.tier_params()
    wait = lateness.lock_wait_seconds(params.late_after_minutes)  # the lunch peak waits out a busy tier
    # its one change, the desired capacity, is kept per run key: a signalled deployment run hands its undo over
    with tier_run("set-capacity", params.tier, tp, 6, wait, undo_by_marks=True, edits_configs=False) as run:
        group = existing_group(run)
        target, message = planned_target(run.key, params, group)
        result = AutoScalingOutcome(
            tier=params.tier, run_key=run.key, dry_run=tp.dry_run, group_id=group.group_id, capacity_message=message
        )
        if message:
            run.record.plan.append(message)
        floor = target if params.floor else None  # the minimum too, as a scheduled action sets it
        if target == group.desired and floor in (None, group.min_size):
            result.capacity_message = (message + " " if message else "") + f"desired capacity is already {target}"
        elif tp.dry_run:
            minimum = f", minimum {group.min_size} -> {floor}" if floor is not None else ""
            run.record.plan.append(f"{group.group_id}: desired {group.desired} -> {target}{minimum}")
        else:
            result.activities = change_capacity_undoably(
                run, group, target, "set the capacity", params.capacity, min_size=floor
            )
        if not tp.dry_run:
            ids = sorted(member_ids(run.region, group.group_id))
            check_servers(run, group, ids, vip_of(run, group))
            result.members = ids
        run.finish(result)
    publish("set-capacity", result)
    return result
