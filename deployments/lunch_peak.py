"""The lunch-peak schedules of `set-capacity/lunch-peak-<tier>`, computed from the cluster declaration.

Each tier's peak is scheduled in one place: Prefect's cron schedules here when the declaration says
`lunch_peak_by: prefect` (then configure-autoscaling's declared peak is off), Auto Scaling's scheduled actions when
it says `autoscaling` (then these schedules are inactive, and a run they would make changes nothing anyway).
Scale out at the peak's start minus the lead time, back at its end, Beijing time (Asia/Shanghai), each schedule with
its own parameters. The lead: the declared `autoscaling.peak.lead_minutes`, else the measured launch-to-healthy time
(the Prefect Variable verify-autoscaling and configure-autoscaling keep) plus `margin_minutes`, else 15 minutes.
"""

from __future__ import annotations

from prefect.schedules import Schedule

from flows.autoscaling_steps import plan
from flows.autoscaling_steps.capacity_schedules import PEAK_SLUGS, capacity_schedule
from flows.declaration import ClusterDeclaration
from flows.parameters import LunchPeak

DEFAULT_LEAD_MINUTES = 15


def measured_launch_seconds(region: str, tier: str) -> float | None:
    from prefect.variables import Variable

    from flows.autoscaling_steps.outcome import launch_seconds_variable

    value = Variable.get(launch_seconds_variable(region, tier), default=None)
    return float(value) if value is not None else None


def lead_minutes(peak: LunchPeak, launch_seconds: float | None) -> int:
    if peak.lead_minutes is None and launch_seconds is None:
        return DEFAULT_LEAD_MINUTES
    return plan.lead_minutes(peak, launch_seconds)


def peak_crons(peak: LunchPeak, lead: int) -> tuple[str, str]:
    """(scale-out cron, scale-in cron), minute hour * * day-of-week, Beijing time."""
    start_h, start_m = (int(part) for part in peak.start.split(":"))
    begin = start_h * 60 + start_m - lead
    if begin < 0:
        raise ValueError(f"a lead time of {lead} min moves the scale-out before midnight: lower lead_minutes")
    end_h, end_m = (int(part) for part in peak.end.split(":"))
    days = peak.days_of_week
    return f"{begin % 60} {begin // 60} * * {days}", f"{end_m} {end_h} * * {days}"


def lunch_peak_schedules(declaration: ClusterDeclaration, tier: str, lead: int | None = None) -> list[Schedule]:
    """The tier's two schedules (slugs peak-out, peak-in); inactive when Auto Scaling schedules the peak.
    `lead` None: computed (declared, else measured + margin, else 15 min)."""
    tier_params = declaration.tier(tier)
    peak = tier_params.autoscaling.peak
    if lead is None:
        measured = None if peak.lead_minutes is not None else measured_launch_seconds(tier_params.region, tier)
        lead = lead_minutes(peak, measured)
    out_cron, in_cron = peak_crons(peak, lead)
    active = declaration.lunch_peak_by == "prefect" and declaration.capacity_plan == "lunch-peak"
    late = declaration.late_after_minutes
    out_slug, in_slug = PEAK_SLUGS
    return [
        capacity_schedule(out_cron, out_slug, tier, f"+{peak.extra}", late, active),
        capacity_schedule(in_cron, in_slug, tier, f"-{peak.extra}", late, active),
    ]
