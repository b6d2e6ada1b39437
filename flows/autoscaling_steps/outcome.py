"""What the Auto Scaling flows return and report (the report's Auto Scaling part is its own artifact)."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.autoscaling_steps import plan
from flows.autoscaling_steps.checks import activity_table
from flows.parameters import AutoScalingClusterParameters, AutoScalingTierParameters
from flows.shared.tier_run import TierOutcome
from tasks import autoscaling as asg


class AutoScalingOutcome(TierOutcome):
    group_id: str | None = None
    launch_configuration_id: str | None = None
    differences: list[str] = Field(default_factory=list, description="what was (dry run: would be) changed")
    launch_seconds: float | None = Field(None, description="measured launch-to-healthy time of the tier's image")
    lead_minutes: int | None = None
    schedule: list[asg.ScheduledAction] = Field(default_factory=list)
    cost: plan.CostReport | None = None
    activities: list[asg.Activity] = Field(default_factory=list)
    capacity_message: str = ""
    members: list[str] = Field(default_factory=list, description="the group's servers, each checked healthy")
    skipped: str | None = Field(None, description="why the run changed nothing (a scheduled run started too late)")


def launch_seconds_variable(region: str, tier: str) -> str:
    """The Prefect Variable keeping the tier's measured launch-to-healthy time (the peak's lead time)."""
    return f"tcscale-autoscaling-{region}-{tier}-launch-seconds"


def tier_params(params: AutoScalingClusterParameters, tier: str, key: str) -> AutoScalingTierParameters:
    chosen = params.session if tier == "session" else params.business
    return chosen.model_copy(update={"run_key": key, "dry_run": params.dry_run or chosen.dry_run})


def publish(flow_name: str, outcome: AutoScalingOutcome, extra: list[str] | None = None) -> None:
    """The Auto Scaling part of the report: difference, schedule against the peak, cost, activities."""
    verb = "would apply" if outcome.dry_run else "applied"
    lines = [f"# {flow_name}: {outcome.tier} tier", ""]
    if outcome.capacity_message:
        lines += [outcome.capacity_message, ""]
    if flow_name == "configure-autoscaling":
        lines += [f"## Difference {verb}", ""]
        lines += [f"- {d}" for d in outcome.differences] or ["No change: the cloud already matches the declaration."]
        lines.append("")
    if outcome.schedule:
        lines += ["## Lunch peak (Beijing time)", ""]
        measured = f"{outcome.launch_seconds:.1f} s" if outcome.launch_seconds is not None else "not measured"
        lines += [f"Launch-to-healthy measured: {measured}; the scale-out fires {outcome.lead_minutes} min early."]
        if outcome.launch_seconds is not None and outcome.lead_minutes is not None:
            spare = outcome.lead_minutes * 60 - outcome.launch_seconds
            lines.append(
                f"The peak capacity is ready about {spare:.0f} s before the peak starts."
                if spare >= 0
                else f"**The peak capacity is ready {-spare:.0f} s after the peak starts**: raise peak.lead_minutes."
            )
        lines.append("")
        lines += [
            f"- {a.name}: desired {a.desired} at '{a.recurrence}' (first {a.start_time}, until {a.end_time})"
            for a in outcome.schedule
        ]
        lines.append("")
    if outcome.cost is not None:
        lines += ["## Monthly cost", "", *outcome.cost.markdown(), ""]
    if outcome.activities:
        lines += ["## Scaling activities", "", *activity_table(outcome.activities), ""]
    lines += extra or []
    text = "\n".join(lines) + "\n"
    outcome.report = text + "\n" + outcome.report
    create_markdown_artifact(
        text, key=f"{flow_name}-{outcome.tier}-{outcome.run_key}"[:200], description=f"{flow_name} ({outcome.tier})"
    )
