"""The guide's "配置更智能的弹性伸缩策略" as flows: a tier handed to Auto Scaling, checked, and resized.

`configure-autoscaling` is declarative: preflight (every problem before any change), then for each resource
(image, launch configuration, scaling group, attached and protected servers, lunch-peak scheduled actions, CPU
alarm policies) it compares the cloud with the declaration and applies only the difference, each creation
written to the undo ledger first. Its report lists the difference applied (or, with `dry_run`, that would be),
"no change" on a second run, when the peak capacity is ready against the peak, and the monthly cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.variables import Variable

from flows.autoscaling_steps import plan
from flows.autoscaling_steps.checks import LaunchCheck, capacity_seen
from flows.autoscaling_steps.converge import Converge, NamedItems, converge_named, record_group_change
from flows.autoscaling_steps.outcome import AutoScalingOutcome, launch_seconds_variable, publish, tier_params
from flows.autoscaling_steps.preflight import TierFacts, preflight
from flows.declaration import declared
from flows.parameters import AutoScalingClusterParameters, AutoScalingTierParameters, CostModel
from flows.shared.ledger import GroupChange, forget_group_changes
from flows.shared.tier_run import TierRun, this_flow_run_id, tier_run
from tasks import autoscaling as asg
from tasks import autoscaling_policies as policies
from tasks import autoscaling_undo, clb, cvm, pricing
from tasks.autoscaling_launch_configurations import (
    create_launch_configuration,
    delete_tagged_launch_configurations,
    find_launch_configuration,
)
from tasks.pricing import ServerPrice

CONFIGURE_STEPS = 12


def _request_lc(facts: TierFacts, image_id: str, tier: str) -> dict[str, Any]:
    source = facts.source
    request: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": facts.instance_type,
        "ProjectId": source.project_id,
        "SecurityGroupIds": source.security_group_ids,
        "InternetAccessible": cvm.internet_like(source),
        "InstanceTags": [{"Key": cvm.TIER_TAG, "Value": tier}],
        "LoginSettings": {"KeyIds": source.key_ids} if source.key_ids else {"KeepImageLogin": "TRUE"},
    }
    return request


def converge_tier(run: TierRun[AutoScalingTierParameters], facts: TierFacts, c: Converge) -> AutoScalingOutcome:
    params = run.params
    region, scaling, timeouts = run.region, params.autoscaling, params.timeouts
    # 1. the image the group launches from
    image_id = scaling.image_id or (facts.image.image_id if facts.image else None)
    if image_id is None:
        name = facts.image_name
        with run.step(f"image {facts.source.instance_id} as {name!r}"):

            def make_image() -> str:
                run.ledger.add(  # written before: an image whose answer was lost is found by the run's tags
                    f"image {name!r} of this run",
                    lambda: cvm.delete_tagged_images(region, run.tags, timeouts.undo, timeouts.poll),
                    f"delete the private images tagged tcscale:run={run.key}, tcscale:tier={run.tier}",
                )
                image = cvm.create_image(facts.source, name, run.tags, True)
                run.record.add("image", image.image_id, created=not image.reused, detail=name)
                return cvm.wait_image_normal(region, image, timeouts.image, timeouts.poll).image_id

            image_id = c.change(f"image the {run.tier} server {facts.source.instance_id} as {name!r}", make_image)
    # 2. the launch configuration
    lc_name = plan.launch_configuration_name(run.tier, image_id or "new-image")
    lc = find_launch_configuration(region, lc_name) if image_id else None
    lc_created = lc is None
    if lc is None:
        with run.step(f"launch configuration {lc_name}"):

            def make_lc() -> asg.LaunchConfiguration:
                run.ledger.add(  # written before: one whose answer was lost is found by the run's tags
                    f"launch configuration {lc_name} of this run",
                    lambda: delete_tagged_launch_configurations(region, run.tags),
                    f"delete the launch configurations tagged {_marks(run)} once no scaling group uses them",
                )
                request = _request_lc(facts, image_id, run.tier)
                made, _ = create_launch_configuration(region, lc_name, request, run.tags)
                ours = made.carries(run.tags)  # also when an earlier attempt made it and its answer was lost
                run.record.add("launch-configuration", made.launch_configuration_id, created=ours, detail=lc_name)
                return made

            lc = c.change(f"create launch configuration {lc_name} ({facts.instance_type} from {image_id})", make_lc)
    # 3. the scaling group
    group = facts.group
    cap, fwd = facts.capacity, facts.forward
    if group is None:
        with run.step(f"scaling group {plan.group_name(run.tier)}"):

            def make_group() -> asg.Group:
                assert lc is not None
                request = {
                    "LaunchConfigurationId": lc.launch_configuration_id,
                    "MinSize": 0,
                    "MaxSize": cap.max_size,
                    "DesiredCapacity": 0,
                    "VpcId": facts.source.vpc_id,
                    "SubnetIds": facts.subnet_ids,
                    "ProjectId": facts.source.project_id,
                    "ForwardLoadBalancers": [fwd.api()],
                    "TerminationPolicies": [scaling.termination_policy],
                    "RetryPolicy": "INCREMENTAL_INTERVALS",
                }
                run.ledger.add(  # written before: one whose answer was lost is found by the run's tags
                    f"scaling group {plan.group_name(run.tier)} of this run",
                    lambda: autoscaling_undo.delete_tagged_groups(region, run.tags, timeouts.undo, timeouts.poll),
                    f"set min/desired to 0 and delete the scaling groups tagged {_marks(run)}",
                )
                made, _ = asg.create_group(region, plan.group_name(run.tier), request, run.tags)
                ours = made.carries(run.tags)
                run.record.add("scaling-group", made.group_id, created=ours, detail=plan.group_name(run.tier))
                return made

            group = c.change(
                f"create scaling group {plan.group_name(run.tier)} ({cap.min_size}/{cap.desired}/{cap.max_size}, "
                f"subnets {', '.join(facts.subnet_ids)}, {fwd.load_balancer_id}/{fwd.listener_id} -> port "
                f"{fwd.port}, {scaling.termination_policy})",
                make_group,
            )
        created_group = True
    else:
        created_group = False
        run.record.add("scaling-group", group.group_id, created=False, detail=group.name)
        changes: dict[str, Any] = {}
        if lc is not None and group.launch_configuration_id != lc.launch_configuration_id:
            changes["LaunchConfigurationId"] = lc.launch_configuration_id
        if sorted(group.subnet_ids) != sorted(facts.subnet_ids):
            changes["SubnetIds"] = facts.subnet_ids
        if group.termination_policies != [scaling.termination_policy]:
            changes["TerminationPolicies"] = [scaling.termination_policy]
        if changes:
            with run.step(f"modify scaling group {group.group_id}"):
                c.change(f"modify scaling group {group.group_id}: {changes}", lambda: modify(run, group, changes))
    if group is None:  # dry run: the rest is all new
        return planned_rest(run, facts, c, image_id)
    # 4. the tier's servers attached and protected from scale-in
    attach_and_protect(run, facts, c, group)
    # 5. bounds (desired only when new, explicit or outside the bounds: alarms and schedules move it)
    bounds_to(run, facts, c, group, created_group)
    # 6. the image starts the apps at boot: launch from it, timed
    launch_seconds = facts.launch_seconds
    check: LaunchCheck | None = None
    if lc_created or launch_seconds is None:
        desc = "launch one server from the launch configuration and time it to healthy (the image starts the apps)"
        check = c.change(desc, lambda: LaunchCheck().run(run, asg.describe_group(region, group.group_id) or group))
        if check is not None:
            launch_seconds = check.seconds
            Variable.set(launch_seconds_variable(region, run.tier), round(check.seconds, 1), overwrite=True)
    lead = plan.lead_minutes(scaling.peak, launch_seconds)
    # 7. lunch-peak scheduled actions and 8. CPU alarm policies
    wanted, _ = plan.peak_actions(run.tier, scaling.peak, cap, lead, asg.cloud_now(region, group))
    put_schedules(run, c, group, wanted if scaling.peak.enabled else [])
    put_policies(run, c, group, plan.alarm_policies(run.tier, scaling) if scaling.alarms.enabled else [])
    return AutoScalingOutcome(
        tier=run.tier,
        run_key=run.key,
        dry_run=params.dry_run,
        image_id=image_id,
        group_id=group.group_id,
        launch_configuration_id=lc.launch_configuration_id if lc else None,
        load_balancer_id=fwd.load_balancer_id,
        listener_id=fwd.listener_id,
        differences=c.differences,
        launch_seconds=launch_seconds,
        lead_minutes=lead,
        schedule=wanted if scaling.peak.enabled else [],
        activities=check.activities if check else [],
        cost=plan.monthly_cost(cap, scaling.peak, lead, scaling.cost, server_price(facts, scaling.cost, image_id)),
    )


def server_price(facts: TierFacts, cost: CostModel, image_id: str | None) -> ServerPrice | None:
    """The cloud's quote of one of the tier's servers per hour (None when a typed price overrides it)."""
    if cost.hourly_price is not None:
        return None
    source = facts.source
    return pricing.quote_server_hour(
        source.zone,
        image_id or source.image_id,
        facts.instance_type,
        cost.charge_type,
        project_id=source.project_id,
        region=source.region,
    )


def _marks(run: TierRun[AutoScalingTierParameters]) -> str:
    return ", ".join(f"{k}={v}" for k, v in run.tags.items())


def modify(run: TierRun[AutoScalingTierParameters], group: asg.Group, changes: dict[str, Any]) -> None:
    """ModifyAutoScalingGroup on a group the run did not create, kept first (per run key and in the ledger): the undo
    puts back each field that still holds the run's value."""
    previous = {k: v for k, v in autoscaling_undo.group_fields(group).items() if k in changes}
    change = GroupChange(region=run.region, tier=run.tier, group_id=group.group_id, kind="fields", written=changes,
                         previous=previous)  # fmt: skip
    record_group_change(run, change)
    asg.modify_group(run.region, group.group_id, changes)


def attach_and_protect(
    run: TierRun[AutoScalingTierParameters], facts: TierFacts, c: Converge, group: asg.Group
) -> None:
    region, timeout, poll = run.region, run.params.autoscaling.activity_timeout, run.params.timeouts.poll
    membership = asg.membership_of(region, [s.instance_id for s in facts.attachable])
    outside = [s.instance_id for s in facts.attachable if s.instance_id not in membership]
    if outside:
        with run.step(f"attach {', '.join(outside)} to {group.group_id}"):

            def attach() -> None:
                fwd = facts.forward
                # the pairs the group's detach would take away (it deregisters its own port only)
                bound = clb.registered_targets(region, fwd.load_balancer_id, fwd.listener_id)
                was_bound = [t for t in clb.targets_on(outside, fwd.port) if t in bound]
                change = GroupChange(region=region, tier=run.tier, group_id=group.group_id, kind="attached",
                                     instance_ids=outside, forward=fwd, was_bound=was_bound)  # fmt: skip
                record_group_change(run, change)
                activity = asg.attach_instances(region, group.group_id, outside)
                asg.wait_activity(region, activity, timeout, poll)

            c.change(f"attach the {run.tier} servers {', '.join(outside)} to {group.group_id}", attach)
    members = {m.instance_id: m for m in asg.members(region, group.group_id)}
    unprotected = [i for i in [s.instance_id for s in facts.attachable] if not (i in members and members[i].protected)]
    if unprotected:
        c.change(
            f"protect {', '.join(unprotected)} from scale-in",
            lambda: asg.set_protection(region, group.group_id, unprotected, True),
        )


def bounds_to(
    run: TierRun[AutoScalingTierParameters], facts: TierFacts, c: Converge, group: asg.Group, created: bool
) -> None:
    region, cap = run.region, facts.capacity
    scaling = run.params.autoscaling
    current = asg.describe_group(region, group.group_id) or group if not run.params.dry_run else group
    changes: dict[str, Any] = {}
    if current.min_size != cap.min_size:
        changes["MinSize"] = cap.min_size
    if current.max_size != cap.max_size:
        changes["MaxSize"] = cap.max_size
    explicit = scaling.desired is not None
    if current.desired != cap.desired and (created or explicit or not cap.min_size <= current.desired <= cap.max_size):
        changes["DesiredCapacity"] = cap.desired
    if not changes:
        return
    with run.step(f"bounds of {group.group_id}: {changes}"):

        def apply() -> None:
            known = {a.activity_id for a in asg.activities(region, group.group_id)}
            if created:  # the group's own undo deletes it
                asg.modify_group(region, group.group_id, changes)
            else:
                modify(run, current, changes)
            poll, seen = run.params.timeouts.poll, capacity_seen(run, current)
            asg.wait_new_activities(region, group.group_id, known, scaling.activity_timeout, poll, seen)

        shown = ", ".join(f"{k} {getattr(current, _FIELD[k])} -> {v}" for k, v in changes.items())
        c.change(f"set {group.group_id} {shown}", apply)


_FIELD = {"MinSize": "min_size", "MaxSize": "max_size", "DesiredCapacity": "desired"}


def put_schedules(
    run: TierRun[AutoScalingTierParameters], c: Converge, group: asg.Group, wanted: list[asg.ScheduledAction]
) -> None:
    explicit_end = run.params.autoscaling.peak.end_time is not None
    converge_named(
        run,
        c,
        group,
        NamedItems(
            kind="scheduled action",
            ours=set(plan.schedule_names(run.tier)),
            gone_because="peak disabled",
            listed=policies.scheduled_actions,
            same=lambda old, new: plan.same_schedule(old, new, explicit_end),
            shown=lambda a: (
                f"desired {a.desired} (min {a.min_size}, max {a.max_size}) at cron '{a.recurrence}' "
                f"Beijing time from {a.start_time} until {a.end_time}"
            ),
            put=policies.put_scheduled_action,
            delete=policies.delete_scheduled_action,
        ),
        wanted,
    )


def put_policies(
    run: TierRun[AutoScalingTierParameters], c: Converge, group: asg.Group, wanted: list[asg.AlarmPolicy]
) -> None:
    converge_named(
        run,
        c,
        group,
        NamedItems(
            kind="alarm policy",
            ours=set(plan.policy_names(run.tier)),
            gone_because="alarms disabled",
            listed=policies.alarm_policies,
            same=lambda old, new: old.same_as(new),
            shown=lambda p: (
                f"CPU {p.operator} {p.threshold} % for {p.period}s x {p.continuous_time} -> "
                f"{p.adjustment:+d}, cooldown {p.cooldown}s"
            ),
            put=policies.put_alarm_policy,
            delete=policies.delete_alarm_policy,
        ),
        wanted,
    )


def planned_rest(
    run: TierRun[AutoScalingTierParameters], facts: TierFacts, c: Converge, image_id: str | None
) -> AutoScalingOutcome:
    scaling = run.params.autoscaling
    ids = ", ".join(s.instance_id for s in facts.attachable)
    c.change(f"attach the {run.tier} servers {ids} and protect them from scale-in")
    c.change(f"set min {facts.capacity.min_size}, desired {facts.capacity.desired}, max {facts.capacity.max_size}")
    c.change("launch one server from the launch configuration and time it to healthy (the image starts the apps)")
    lead = plan.lead_minutes(scaling.peak, facts.launch_seconds)
    wanted, _ = plan.peak_actions(run.tier, scaling.peak, facts.capacity, lead, datetime.now(UTC))
    for action in wanted if scaling.peak.enabled else []:
        c.change(f"create scheduled action {action.name}: desired {action.desired} at '{action.recurrence}'")
    for policy in plan.alarm_policies(run.tier, scaling) if scaling.alarms.enabled else []:
        c.change(
            f"create alarm policy {policy.name}: CPU {policy.operator} {policy.threshold} % -> {policy.adjustment:+d}"
        )
    return AutoScalingOutcome(
        tier=run.tier,
        run_key=run.key,
        dry_run=True,
        image_id=image_id,
        differences=c.differences,
        lead_minutes=lead,
        load_balancer_id=facts.forward.load_balancer_id,
        listener_id=facts.forward.listener_id,
        cost=plan.monthly_cost(
            facts.capacity, scaling.peak, lead, scaling.cost, server_price(facts, scaling.cost, image_id)
        ),
        schedule=wanted,
    )


def configure_tier(params: AutoScalingTierParameters, tier: str) -> AutoScalingOutcome:
    # every change is found by the run's tags or kept per run key with its tier: a signalled deployment run hands the
    # undo of this tier alone to a cleanup-run (a tier configured before it in this run keeps its configuration)
    with tier_run("configure-autoscaling", tier, params, CONFIGURE_STEPS, undo_by_marks=True, edits_configs=False,
                  one_tier=True) as run:  # fmt: skip
        with run.step("preflight: servers, CLB listener, image, subnets, bounds, schedule, alarms"):
            facts = preflight(run)
        c = Converge(run)
        result = converge_tier(run, facts, c)
        run.record.plan += c.differences or ["no change: the cloud already matches the declaration"]
        run.finish(result)
    forget_group_changes(run.key, tier)  # configured: none of its changes is undone again
    publish("configure-autoscaling", result)
    return result


@flow(name="configure-autoscaling", description="配置弹性伸缩: hand each tier to Auto Scaling (declarative)")
def configure_autoscaling(params: AutoScalingClusterParameters) -> list[AutoScalingOutcome]:
    params = declared(params)
    key = params.run_key or this_flow_run_id()
    return [configure_tier(tier_params(params, tier, key), tier) for tier in params.tiers]
