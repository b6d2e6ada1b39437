"""`verify-autoscaling`: the guide's check of a scaling group: desired + 1, the new server healthy, desired back."""

from __future__ import annotations

from prefect import flow
from prefect.variables import Variable

from flows.autoscaling_steps.checks import LaunchCheck, existing_group
from flows.autoscaling_steps.outcome import AutoScalingOutcome, launch_seconds_variable, publish, tier_params
from flows.declaration import declared
from flows.parameters import AutoScalingClusterParameters
from flows.shared.tier_run import this_flow_run_id, tier_run
from tasks import autoscaling as asg


@flow(name="verify-autoscaling", description="弹性伸缩验证: desired + 1, the new server healthy, desired restored")
def verify_autoscaling(params: AutoScalingClusterParameters) -> list[AutoScalingOutcome]:
    params = declared(params)
    key = params.run_key or this_flow_run_id()
    outcomes = []
    for tier in params.tiers:
        tp = tier_params(params, tier, key)
        # its one change, the + 1, is kept per run key: a signalled deployment run hands its undo over
        with tier_run("verify-autoscaling", tier, tp, 8, undo_by_marks=True, edits_configs=False) as run:
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
