"""`verify-autoscaling` (the guide's check: desired + 1 and back) and `set-capacity` (absolute, +n, -n)."""

from __future__ import annotations

from prefect import flow
from prefect.variables import Variable

from deployments.declaration import declared, load_declaration
from flows import lateness
from flows import scaling_plan as plan
from flows.parameters import AutoScalingClusterParameters, CapacityParameters
from flows.run import TierRun, this_flow_run_id, tier_run
from flows.scaling_checks import LaunchCheck, change_capacity, check_servers, vip_of
from flows.scaling_outcome import AutoScalingOutcome, launch_seconds_variable, publish, tier_params
from tasks import autoscaling as asg


@flow(name="verify-autoscaling", description="弹性伸缩验证: desired + 1, the new server healthy, desired restored")
def verify_autoscaling(params: AutoScalingClusterParameters) -> list[AutoScalingOutcome]:
    params = declared(params)
    key = params.run_key or this_flow_run_id()
    outcomes = []
    for tier in params.tiers:
        tp = tier_params(params, tier, key)
        with tier_run("verify-autoscaling", tier, tp, 8) as run:
            group = existing_group(run)
            if tp.dry_run:
                run.record.plan.append(f"{group.group_id}: desired {group.desired} -> {group.desired + 1} and back")
                result = AutoScalingOutcome(tier=tier, run_key=run.key, dry_run=True, group_id=group.group_id)
            else:
                check = LaunchCheck().run(run, group)
                Variable.set(launch_seconds_variable(run.region, tier), round(check.seconds, 1), overwrite=True)
                history = asg.activities(run.region, group.group_id, 20)
                result = AutoScalingOutcome(
                    tier=tier,
                    run_key=run.key,
                    dry_run=False,
                    group_id=group.group_id,
                    activities=history,
                    new_instance_ids=check.new_ids,
                    launch_seconds=check.seconds,
                )
            run.finish(result)
        publish("verify-autoscaling", result)
        outcomes.append(result)
    return outcomes


def existing_group(run: TierRun) -> asg.Group:
    group = asg.find_group(run.region, plan.group_name(run.tier))
    if group is None:
        raise LookupError(f"no scaling group {plan.group_name(run.tier)} in {run.region}: run configure-autoscaling")
    return group


def clamp(target: int, group: asg.Group) -> tuple[int, str]:
    if target < group.min_size or target > group.max_size:
        clamped = min(max(target, group.min_size), group.max_size)
        return clamped, (
            f"asked for {target} servers, outside {group.group_id}'s bounds [{group.min_size}, "
            f"{group.max_size}]: set to {clamped} (change the bounds with configure-autoscaling)"
        )
    return target, ""


@flow(name="set-capacity", description="调整期望实例数: a tier's desired capacity (4, +2, -1), clamped to the bounds")
def set_capacity(params: CapacityParameters) -> AutoScalingOutcome:
    declaration = load_declaration()
    params = declared(params)
    reason = lateness.late_reason(params.late_after_minutes) or lateness.peak_elsewhere_reason(
        params.tier, declaration.lunch_peak_by if declaration else None
    )
    if reason:
        return lateness.skip("set-capacity", params.tier, this_flow_run_id(), params.dry_run, reason)
    tp = params.tier_params()
    with tier_run("set-capacity", params.tier, tp, 6) as run:
        group = existing_group(run)
        target, message = clamp(params.target(group.desired), group)
        result = AutoScalingOutcome(
            tier=params.tier, run_key=run.key, dry_run=tp.dry_run, group_id=group.group_id, capacity_message=message
        )
        if message:
            run.record.plan.append(message)
        if target == group.desired:
            result.capacity_message = (message + " " if message else "") + f"desired capacity is already {target}"
        elif tp.dry_run:
            run.record.plan.append(f"{group.group_id}: desired {group.desired} -> {target}")
        else:
            result.activities = change_capacity(run, group, target, "set the capacity")
        if not tp.dry_run:
            ids = [m.instance_id for m in asg.members(run.region, group.group_id)]
            check_servers(run, group, ids, vip_of(run, group))
            result.members = ids
        run.finish(result)
    publish("set-capacity", result)
    return result
