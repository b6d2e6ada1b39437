"""`plan-capacity`: a tier's capacity scheduled ahead of its own peaks, learned from its history.

Predictive scaling as AWS has it (a forecast from the last weeks, capacity launched ahead by a buffer), which
Tencent Cloud's Auto Scaling lacks, built from what it has: Cloud Monitor's history and scheduled actions.

1. preflight: the tier's scaling group and its CLB listener; the declaration says the plan replaces the fixed
   lunch peak (`capacity_plan: forecast`) and where schedules live (`lunch_peak_by`); the launch-to-healthy time
   configure-autoscaling / verify-autoscaling measured (the lead: it plus `margin_minutes`);
2. read 14-28 days of the listener's new connections per second (5-minute slots) and the servers' CPU;
3. one server's capacity at the target CPU, measured from the same weeks (or given);
4. forecast the next weekday and the next weekend day per slot (flows/capacity_plan_steps/forecast.py);
5. turn each into a few capacity steps: servers for the forecast, ahead by the lead, within the group's bounds;
6. apply them in the one place the declaration names: the group's Auto Scaling scheduled actions
   (`lunch_peak_by: autoscaling`, capacity_plan_steps/apply.py) or the schedules of the tier's set-capacity deployment
   in Prefect (`prefect`, capacity_plan_steps/prefect_schedules.py); the plan's leftovers in the other place are
   removed. Each change in the undo ledger first (dry_run: the difference only). The CPU alarms stay: they add
   servers for what the forecast did not see.
Its report: the plan, the difference, the chart of history + forecast + planned capacity, and the day's cost.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.autoscaling_steps.capacity_schedules import full_deployment_name
from flows.autoscaling_steps.checks import forward_of
from flows.autoscaling_steps.plan import group_name, lead_minutes, schedule_names
from flows.autoscaling_steps.preflight import stored_launch_seconds
from flows.capacity_plan_steps import apply, forecast, history, prefect_schedules
from flows.capacity_plan_steps.chart import plan_chart
from flows.capacity_plan_steps.kept import forget_changes
from flows.capacity_plan_steps.steps import CapacityStep, plan_day, server_hours
from flows.declaration import ClusterDeclaration, declared, load_declaration
from flows.parameters import AutoScalingTierParameters, CapacityPlanParameters, LunchPeak
from flows.shared.tier_run import TierOutcome, TierRun, tier_run
from tasks import autoscaling as asg
from tasks import autoscaling_policies as policies
from tasks import clb, cvm, pricing
from tasks.autoscaling_launch_configurations import describe_launch_configuration

PLAN_STEPS = 6
DEFAULT_LEAD_MINUTES = 15  # no launch-to-healthy measured yet (deployments/lunch_peak.py uses the same)


class PlanOutcome(TierOutcome):
    group_id: str | None = None
    schedules_in: str = ""
    per_server: float | None = None
    capacity_how: str = ""
    target_cpu: int | None = None
    launch_seconds: float | None = None
    lead_minutes: int | None = None
    plans: dict[str, list[CapacityStep]] = Field(default_factory=dict)
    differences: list[str] = Field(default_factory=list)
    hourly_price: float | None = None
    price_source: str = ""
    day_cost: dict[str, float] = Field(default_factory=dict, description="each day type's plan, one day's cost")
    fixed_day_cost: float | None = None
    history_days: int = 0


class Where(BaseModel):
    group: asg.Group
    vip: str
    vpc_id: str | None
    port: int
    by_prefect: bool  # lunch_peak_by: prefect (the deployment's schedules), else Auto Scaling's scheduled actions
    schedules_in: str
    launch_seconds: float | None
    lead: int


def preflight(params: CapacityPlanParameters, declaration: ClusterDeclaration | None, region: str) -> Where:
    problems = []
    tier = params.tier
    by_prefect = (declaration or ClusterDeclaration()).lunch_peak_by == "prefect"
    if not params.dry_run:
        if declaration is None or declaration.capacity_plan != "forecast":
            problems.append(
                f"the cluster declaration schedules the fixed lunch peak for the {tier} tier (capacity_plan: "
                "lunch-peak): declare `capacity_plan: forecast` so the plan replaces it (one plan, in one place), "
                "or run with dry_run to see the plan"
            )
        elif by_prefect and prefect_schedules.deployment_schedules(tier)[0] is None:
            problems.append(prefect_schedules.missing_deployment(tier))
    group = asg.find_group(region, group_name(tier))
    if group is None:
        raise history.PlanInputError(
            "; ".join([*problems, f"no scaling group {group_name(tier)} in {region}: run configure-autoscaling first"])
        )
    peak_actions = sorted(
        a.name for a in policies.scheduled_actions(region, group.group_id) if a.name in schedule_names(tier)
    )
    if peak_actions and not params.dry_run:
        problems.append(
            f"{group.group_id} still has the fixed lunch peak's scheduled actions {', '.join(peak_actions)}, which "
            "would fire beside the plan: run configure-autoscaling (with capacity_plan: forecast it removes them)"
        )
    if problems:
        raise history.PlanInputError("; ".join(problems))
    fwd = forward_of(group)
    balancer = clb.describe_load_balancer(region, fwd.load_balancer_id)
    if balancer is None or not balancer.vip:
        raise history.PlanInputError(f"the CLB {fwd.load_balancer_id} of {group.group_id} is gone")
    internal = balancer.type == "INTERNAL"
    measured = stored_launch_seconds(region, tier)
    peak = LunchPeak(margin_minutes=params.margin_minutes)
    lead = lead_minutes(peak, measured) if measured is not None else DEFAULT_LEAD_MINUTES
    return Where(
        group=group,
        vip=balancer.vip,
        vpc_id=balancer.vpc_id if internal else None,
        port=balancer_port(region, fwd),
        by_prefect=by_prefect,
        schedules_in=f"the Prefect schedules of {full_deployment_name(tier)}"
        if by_prefect
        else f"the Auto Scaling scheduled actions of {group.group_id}",
        launch_seconds=measured,
        lead=lead,
    )


def bounds_base(region: str, group: asg.Group, declared_min: int | None) -> int:
    """The tier's base: the declared min_size, else its protected servers (attached by configure-autoscaling),
    as configure-autoscaling sets the group's minimum; never the group's minimum now, which a step may have raised."""
    if declared_min is not None:
        return declared_min
    attached = [m for m in asg.members(region, group.group_id) if m.creation_type == "MANUAL_ATTACHING"]
    return max(len(attached), 1)


def balancer_port(region: str, fwd: asg.ForwardLoadBalancer) -> int:
    """The listener's own port (the group's `port` is the servers' backend port)."""
    found = [li for li in clb.listeners(region, fwd.load_balancer_id) if li.get("ListenerId") == fwd.listener_id]
    if not found:
        raise history.PlanInputError(f"the listener {fwd.listener_id} of {fwd.load_balancer_id} is gone")
    return int(found[0]["Port"])


def next_days(today: date) -> dict[str, date]:
    """The next day of each type after today."""
    found: dict[str, date] = {}
    day = today
    while len(found) < 2:
        day += timedelta(days=1)
        found.setdefault(forecast.day_type(day), day)
    return found


@flow(name="plan-capacity", description="容量规划: schedule a tier's capacity ahead of the peaks its history shows")
def plan_capacity(params: CapacityPlanParameters) -> PlanOutcome:
    declaration = load_declaration()
    params = declared(params)
    tp = params.tier_params()
    tier = params.tier
    # its changes are kept per run key (capacity_plan_steps/kept.py): a signalled deployment run hands its undo over
    with tier_run("plan-capacity", tier, tp, PLAN_STEPS, undo_by_marks=True, edits_configs=False) as run:
        with run.step("preflight: scaling group, CLB listener, declaration, launch-to-healthy time"):
            where = preflight(params, declaration, run.region)
        group = where.group
        now = asg.cloud_now(run.region, group)
        start = history.slot_floor(now - timedelta(days=params.history_days))
        with run.step(f"read {params.history_days} days of {history.LOAD_METRIC} of {where.vip}:{where.port}"):
            load = history.read_load(run.region, where.vip, where.vpc_id, where.port, start, now)
            past = history.load_days(load, start)
        target = params.target_cpu or tp.autoscaling.alarms.high.threshold
        with run.step(f"one server's capacity at {target} % CPU"):
            if params.connections_per_server is not None:
                capacity = history.Capacity(per_server=params.connections_per_server, how="given")
            else:
                members = [m.instance_id for m in asg.members(run.region, group.group_id) if m.state == "IN_SERVICE"]
                capacity = history.measure_capacity(run.region, members, load, start, now, target)
        base = bounds_base(run.region, group, tp.autoscaling.min_size)
        plans: dict[str, list[CapacityStep]] = {}
        forecasts: dict[str, list[float]] = {}
        days = next_days(now.astimezone(forecast.BEIJING).date())
        with run.step(f"forecast {', '.join(f'{k} {d}' for k, d in days.items())} and plan, lead {where.lead} min"):
            for kind, day in days.items():
                forecasts[kind] = forecast.forecast_day(past, day)
                plans[kind] = plan_day(
                    forecasts[kind], capacity.per_server, where.lead, base, group.max_size, params.max_steps
                )
        if plans["weekday"] == plans["weekend"]:
            plans = {"daily": plans["weekday"]}
        with run.step(f"{'plan' if tp.dry_run else 'apply'} the steps as {where.schedules_in}"):
            differences = apply_plan(run, where, plans, now, (declaration or ClusterDeclaration()).late_after_minutes)
        run.record.plan += differences or [f"no change: {where.schedules_in} already hold this plan"]
        price, price_source = hourly_price(run.region, group, params.hourly_price, tp)
        outcome = PlanOutcome(
            tier=tier,
            run_key=run.key,
            dry_run=tp.dry_run,
            group_id=group.group_id,
            schedules_in=where.schedules_in,
            per_server=capacity.per_server,
            capacity_how=capacity.how,
            target_cpu=target,
            launch_seconds=where.launch_seconds,
            lead_minutes=where.lead,
            plans=plans,
            differences=differences,
            hourly_price=price,
            price_source=price_source,
            day_cost={k: round(server_hours(s) * price, 2) for k, s in plans.items()},
            fixed_day_cost=round(fixed_server_hours(base, tp.autoscaling.peak) * price, 2),
            history_days=len(forecast.usable_days(past, max(days.values()))),
        )
        run.finish(outcome)
        chart = chart_lines(outcome, past, days, forecasts)
        if differences and not tp.dry_run:
            forget_changes(run.key)  # the plan is in place: nothing of this run for a cleanup-run to put back
    publish(outcome, chart)
    return outcome


def apply_plan(
    run: TierRun[AutoScalingTierParameters],
    where: Where,
    plans: dict[str, list[CapacityStep]],
    now: datetime,
    late_after_minutes: int,
) -> list[str]:
    """The plan written in the one place the declaration names, then the plan's leftovers in the other removed
    (written first: no moment without a plan); the fixed peak's Prefect schedules paused when Prefect holds it."""
    if where.by_prefect:
        wanted = prefect_schedules.wanted_schedules(run.tier, plans, late_after_minutes)
        differences = prefect_schedules.converge(run, wanted, pause_peak=True)
        return differences + apply.converge(run, where.group, [], now)
    differences = apply.converge(
        run, where.group, apply.wanted_actions(run.tier, plans, where.group.max_size, now), now
    )
    return differences + prefect_schedules.converge(run, [], pause_peak=False)


def hourly_price(
    region: str, group: asg.Group, typed: float | None, tp: AutoScalingTierParameters
) -> tuple[float, str]:
    """One server's price per hour and where it comes from: typed (the run's, else the declared cost model's), else
    the cloud's quote (InquiryPriceRunInstances) for the group's launch configuration, zone and charge type."""
    cost = tp.autoscaling.cost
    for price in (typed, cost.hourly_price):
        if price is not None:
            return price, f"{price} {cost.currency}/h per server (typed)"
    lc = describe_launch_configuration(region, group.launch_configuration_id)
    if lc is None:
        raise history.PlanInputError(f"the launch configuration {group.launch_configuration_id} is gone")
    members = [m.instance_id for m in asg.members(region, group.group_id)]
    zone = group.zones[0] if group.zones else next((s.zone for s in cvm.describe_servers(region, members[:1])), "")
    quote = pricing.quote_server_hour(
        zone, lc.image_id, lc.instance_type, cost.charge_type,
        project_id=lc.project_id, region=region,
    )  # fmt: skip
    return quote.hourly, quote.describe()


def fixed_server_hours(base: int, peak: LunchPeak) -> float:
    """The guide's fixed lunch peak for one day: base servers all day, + extra from start to end."""
    start = int(peak.start[:2]) * 60 + int(peak.start[3:])
    end = int(peak.end[:2]) * 60 + int(peak.end[3:])
    return base * 24 + peak.extra * (end - start) / 60


def chart_lines(
    outcome: PlanOutcome, past: dict[date, forecast.Day], days: dict[str, date], forecasts: dict[str, list[float]]
) -> list[str]:
    """The chart of the next day: the two days before it (as far as known), its forecast and its plan."""
    kind, day = min(days.items(), key=lambda item: item[1])
    steps = outcome.plans.get(kind) or outcome.plans["daily"]
    shown = [day - timedelta(days=2), day - timedelta(days=1)]
    values: list[float | None] = []
    for d in shown:
        values += past.get(d, [None] * forecast.SLOTS_PER_DAY)
    per_server = outcome.per_server or 1.0
    return plan_chart(
        f"plan-capacity, {outcome.tier} tier: {day} ({kind})",
        f"{outcome.tier} tier, {day}: " + ", ".join(f"{s.at()} {s.servers}" for s in steps),
        history=values,
        history_start=forecast.slot_start(shown[0], 0),
        forecast=forecasts[kind],
        forecast_start=forecast.slot_start(day, 0),
        steps=steps,
        per_server=per_server,
        unit=f"{history.LOAD_METRIC} /s",
    )


def publish(outcome: PlanOutcome, chart: list[str]) -> None:
    verb = "would apply" if outcome.dry_run else "applied"
    lines = [f"# plan-capacity: {outcome.tier} tier", ""]
    measured = f"{outcome.launch_seconds:.0f} s" if outcome.launch_seconds is not None else "not measured yet"
    lines += [
        f"From {outcome.history_days} days of history. One server carries {outcome.per_server} new connections/s "
        f"at {outcome.target_cpu} % CPU ({outcome.capacity_how}). Launch-to-healthy {measured}: each step up fires "
        f"{outcome.lead_minutes} min ahead. Scheduled in: {outcome.schedules_in}; the CPU alarms stay the safety net.",
        "",
        *chart,
        "",
        "## Plan (Beijing time)",
        "",
        "| days | steps (time: servers) | server-hours a day | a day's cost |",
        "|---|---|---|---|",
    ]
    for kind, steps in outcome.plans.items():
        cost = outcome.day_cost.get(kind, 0.0)
        shown = ", ".join(f"{s.at()}: {s.servers}" for s in steps)
        lines.append(f"| {kind} | {shown} | {server_hours(steps):.1f} | {cost:.2f} |")
    if outcome.fixed_day_cost is not None:
        lines += ["", f"The guide's fixed lunch peak would cost {outcome.fixed_day_cost:.2f} a day "
                      f"(one server-hour: {outcome.price_source})."]  # fmt: skip
    lines += ["", f"## Difference {verb}", ""]
    lines += [f"- {d}" for d in outcome.differences] or [f"No change: {outcome.schedules_in} already hold this plan."]
    text = "\n".join(lines) + "\n"
    outcome.report = text + "\n" + outcome.report
    create_markdown_artifact(
        text, key=f"plan-capacity-{outcome.tier}-{outcome.run_key}"[:200], description=f"plan-capacity ({outcome.tier})"
    )
