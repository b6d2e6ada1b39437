"""A scheduled run that starts too late changes nothing: an 11:00 scale-out must not fire at 15:00.

Prefect starts a late run whenever a worker comes back (no cutoff), so a lunch-peak run checks its own lateness:
its flow run's expected start (the schedule's instant) against now. And a run Prefect's scheduler made for a tier
whose lunch peak is declared Auto Scaling's (`lunch_peak_by: autoscaling`) does nothing either: the peak is
scheduled in one place; nor does one the fixed peak's schedule made once the declaration's `capacity_plan: forecast`
replaces the peak (prefect.yaml deploys that schedule active whatever the declaration says).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prefect import get_run_logger
from prefect.context import FlowRunContext

from flows.autoscaling_steps.capacity_schedules import PEAK_SLUGS
from flows.autoscaling_steps.outcome import AutoScalingOutcome, publish
from flows.shared import tier_lock

if TYPE_CHECKING:
    from flows.declaration import ClusterDeclaration


def expected_start() -> datetime | None:
    """When the run was scheduled to start (its flow run's expected start time), None outside a flow run."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.expected_start_time is None:
        return None
    return context.flow_run.expected_start_time


def auto_scheduled() -> bool:
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.auto_scheduled)


def late_reason(late_after_minutes: int | None, now: datetime | None = None) -> str | None:
    """Why the run must change nothing because it starts too late, or None."""
    expected = expected_start()
    if late_after_minutes is None or expected is None:
        return None
    now = now or datetime.now(UTC)
    late = now - expected
    if late <= timedelta(minutes=late_after_minutes):
        return None
    return (
        f"skipped: scheduled for {expected.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, started "
        f"{now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, {late.total_seconds() / 60:.0f} min late, more than "
        f"late_after_minutes={late_after_minutes}: nothing was changed (a worker was probably down; run it again "
        "by hand if the change is still wanted)"
    )


def lock_wait_seconds(late_after_minutes: int | None, now: datetime | None = None) -> float | None:
    """How long a run waits for its busy tier: a run Prefect's scheduler made (the lunch peak) until its lateness
    limit (never shorter than a person's wait), as a real scale-out holds a tier for many minutes and the peak must
    still come; None (`LOCK_WAIT_SECONDS`: "busy" at once) for a run made by a person, from the UI or chat, or one
    that is never too late."""
    expected = expected_start()
    if late_after_minutes is None or expected is None or not auto_scheduled():
        return None
    deadline = expected + timedelta(minutes=late_after_minutes)
    return max((deadline - (now or datetime.now(UTC))).total_seconds(), tier_lock.LOCK_WAIT_SECONDS)


def schedule_slug() -> str | None:
    """The slug of the deployment schedule that made this run (its flow run's `created_by`), else None."""
    context = FlowRunContext.get()
    made_by = context.flow_run.created_by if context and context.flow_run else None
    return made_by.display_value if made_by is not None and made_by.type == "SCHEDULE" else None


def peak_elsewhere_reason(tier: str, declaration: ClusterDeclaration | None) -> str | None:
    """A run made by Prefect's scheduler for a tier whose lunch peak Auto Scaling schedules, or by the fixed lunch
    peak's schedule (peak-out, peak-in) of a tier whose forecast plan replaces it: skipped."""
    if declaration is None or not auto_scheduled():
        return None
    if declaration.lunch_peak_by == "autoscaling":
        return (
            f"skipped: the {tier} tier's lunch peak is declared `lunch_peak_by: autoscaling` (Auto Scaling's scheduled "
            "actions), so this Prefect schedule changes nothing: the peak is scheduled in one place"
        )
    slug = schedule_slug()
    if declaration.capacity_plan == "forecast" and slug in PEAK_SLUGS:
        return (
            f"skipped: made by the fixed lunch peak's schedule {slug}, while the declaration says `capacity_plan: "
            f"forecast` (plan-capacity's steps replace the {tier} tier's fixed peak): nothing was changed; "
            "plan-capacity pauses this schedule"
        )
    return None


def skip(flow_name: str, tier: str, run_key: str, dry_run: bool, reason: str) -> AutoScalingOutcome:
    """Record why nothing was done (log + the flow's report artifact); the run ends Completed."""
    get_run_logger().warning("%s (%s tier): %s", flow_name, tier, reason)
    outcome = AutoScalingOutcome(tier=tier, run_key=run_key, dry_run=dry_run, skipped=reason, capacity_message=reason)
    publish(flow_name, outcome)
    return outcome
