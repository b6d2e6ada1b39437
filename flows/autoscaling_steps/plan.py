"""The declared Auto Scaling state of a tier, computed from its parameters: capacity, the lunch-peak schedule
(Beijing time, fired early by the lead time), the CPU alarm policies, and the monthly cost of the plan.

Pure functions: `configure-autoscaling` compares their answer with the cloud and applies the difference.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel

from flows.parameters import AutoScalingParameters, CostModel, LunchPeak
from tasks.autoscaling import AlarmPolicy, ScheduledAction
from tasks.pricing import ServerPrice

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
MIN_NOTICE = timedelta(minutes=5)  # a first firing closer than this to now moves to the next day


class Capacity(BaseModel):
    min_size: int
    desired: int
    max_size: int


def group_name(tier: str) -> str:
    return f"tcscale-{tier}"


def launch_configuration_name(tier: str, image_id: str) -> str:
    return f"tcscale-{tier}-{image_id}"[:60]


def schedule_names(tier: str) -> tuple[str, str]:
    """The names of the tier's lunch-peak scheduled actions (out, in): they carry no tag, their name is the mark."""
    return f"tcscale-{tier}-peak-out", f"tcscale-{tier}-peak-in"


def policy_names(tier: str) -> tuple[str, str]:
    """The names of the tier's CPU alarm policies (high, low)."""
    return f"tcscale-{tier}-cpu-high", f"tcscale-{tier}-cpu-low"


def capacity(params: AutoScalingParameters, existing: int) -> tuple[Capacity, list[str]]:
    """The group's bounds; `existing` servers are attached (and protected), so never fewer by default."""
    extra = params.peak.extra if params.peak.enabled else 0
    low = params.min_size if params.min_size is not None else existing
    want = params.desired if params.desired is not None else max(low, existing)
    high = params.max_size if params.max_size is not None else want + extra + 2
    problems = []
    if low > high:
        problems.append(f"min_size {low} > max_size {high}")
    if not low <= want <= high:
        problems.append(f"desired capacity {want} is outside the bounds [{low}, {high}]")
    if existing > high:
        problems.append(f"the tier has {existing} servers to attach, more than max_size {high}: raise max_size")
    if params.peak.enabled and want + extra > high:
        problems.append(f"the peak needs {want} + {extra} servers, more than max_size {high}: raise max_size")
    return Capacity(min_size=low, desired=want, max_size=high), problems


def lead_minutes(peak: LunchPeak, launch_seconds: float | None) -> int:
    """How early the scale-out fires: given, else the measured launch-to-healthy time (whole minutes) + margin."""
    if peak.lead_minutes is not None:
        return peak.lead_minutes
    return math.ceil((launch_seconds or 0) / 60) + peak.margin_minutes


def _days(field: str) -> set[int]:
    """A cron day-of-week field (1 = Monday .. 7) as ISO weekdays."""
    days: set[int] = set()
    for part in field.split(","):
        base, _, step = part.partition("/")
        first, last = (1, 7) if base == "*" else (int(base.split("-")[0]), int(base.split("-")[-1]))
        days |= set(range(first, last + 1, int(step or 1)))
    return days


def _hhmm(text: str) -> tuple[int, int]:
    hour, minute = text.split(":")
    return int(hour), int(minute)


def next_at(after: datetime, hour: int, minute: int, days: set[int]) -> datetime:
    moment = after.astimezone(BEIJING).replace(hour=hour, minute=minute, second=0, microsecond=0)
    while moment <= after or moment.isoweekday() not in days:
        moment += timedelta(days=1)
    return moment


def beijing(moment: datetime) -> str:
    return moment.astimezone(BEIJING).replace(microsecond=0).isoformat()


def peak_actions(
    tier: str, peak: LunchPeak, cap: Capacity, lead: int, now: datetime
) -> tuple[list[ScheduledAction], list[str]]:
    """The scale-out (at start - lead) and scale-in (at end) scheduled actions, daily until EndTime."""
    problems: list[str] = []
    days = _days(peak.days_of_week)
    start_h, start_m = _hhmm(peak.start)
    out_at = datetime(2000, 1, 1, start_h, start_m) - timedelta(minutes=lead)
    end_h, end_m = _hhmm(peak.end)
    if out_at.day != 1:
        problems.append(f"a lead time of {lead} min moves the scale-out before midnight: lower lead_minutes")
    first_out = next_at(now + MIN_NOTICE, out_at.hour, out_at.minute, days)
    first_in = next_at(first_out, end_h, end_m, days)
    end = first_out + timedelta(days=365)
    if peak.end_time is not None:
        try:
            end = datetime.fromisoformat(peak.end_time)
        except ValueError:
            problems.append(f"peak.end_time {peak.end_time!r} is not YYYY-MM-DDThh:mm:ss+08:00")
        else:
            if end.tzinfo is None:
                problems.append(f"peak.end_time {peak.end_time!r} has no UTC offset (Beijing time is +08:00)")
                end = end.replace(tzinfo=BEIJING)
            if end <= now:
                problems.append(f"peak.end_time {peak.end_time} is in the past: nothing would ever fire")
            elif end <= first_in:
                problems.append(f"peak.end_time {peak.end_time} is before the first peak ends ({beijing(first_in)})")
    dow = peak.days_of_week
    extra = peak.extra
    out = ScheduledAction(
        name=schedule_names(tier)[0],
        min_size=cap.min_size + extra,
        max_size=cap.max_size,
        desired=cap.desired + extra,
        start_time=beijing(first_out),
        end_time=beijing(end),
        recurrence=f"{out_at.minute} {out_at.hour} * * {dow}",
    )
    back = ScheduledAction(
        name=schedule_names(tier)[1],
        min_size=cap.min_size,
        max_size=cap.max_size,
        desired=cap.desired,
        start_time=beijing(first_in),
        end_time=beijing(end),
        recurrence=f"{end_m} {end_h} * * {dow}",
    )
    return [out, back], problems


def same_schedule(have: ScheduledAction, want: ScheduledAction, explicit_end: bool) -> bool:
    """Equal in what the declaration fixes: sizes and recurrence (and EndTime when given); the first firing
    moves with the day a run happens on, so it is not compared."""
    keys = {"min_size", "max_size", "desired", "recurrence"} | ({"end_time"} if explicit_end else set())
    return have.model_dump(include=keys) == want.model_dump(include=keys)


def alarm_policies(tier: str, params: AutoScalingParameters) -> list[AlarmPolicy]:
    policies = []
    high, low = policy_names(tier)
    for name, alarm, operator in (
        (high, params.alarms.high, "GREATER_THAN"),
        (low, params.alarms.low, "LESS_THAN"),
    ):
        period, count = alarm.period_and_count()
        policies.append(
            AlarmPolicy(
                name=name,
                adjustment=alarm.adjustment,
                operator=operator,
                threshold=alarm.threshold,
                period=period,
                continuous_time=count,
                cooldown=alarm.cooldown,
            )
        )
    return policies


# --- cost ----------------------------------------------------------------------------------------------------


class CostReport(BaseModel):
    fixed_servers: int
    fixed_monthly: float
    scheduled_monthly: float
    saving_percent: float
    currency: str
    short_hours: list[int] = []  # hours where the plan has fewer servers than the load profile needs
    hourly_price: float = 0.0
    price_source: str = ""

    def markdown(self) -> list[str]:
        lines = [
            "| plan | monthly cost |",
            "|---|---|",
            f"| fixed peak capacity ({self.fixed_servers} servers all day) "
            f"| {self.fixed_monthly:.2f} {self.currency} |",
            f"| scheduled plan (base + lunch peak) | {self.scheduled_monthly:.2f} {self.currency} |",
            "",
            f"Saving: **{self.saving_percent:.1f} %** (the guide estimates about 30 % for a lunch-peak pattern).",
        ]
        if self.price_source:
            lines.append(f"One server-hour: {self.hourly_price:.4f} {self.currency}, {self.price_source}.")
        if self.short_hours:
            hours = ", ".join(f"{h:02d}:00" for h in self.short_hours)
            lines.append(f"The plan has fewer servers than the load profile needs at {hours}: the CPU alarms cover it.")
        return lines


def planned_servers(cap: Capacity, peak: LunchPeak, lead: int) -> list[float]:
    """Servers running in each hour 0..23 Beijing time under the plan (fractions of an hour count)."""
    hours = [float(cap.desired)] * 24
    if not peak.enabled:
        return hours
    start_h, start_m = _hhmm(peak.start)
    end_h, end_m = _hhmm(peak.end)
    begin, finish = start_h * 60 + start_m - lead, end_h * 60 + end_m
    for hour in range(24):
        overlap = max(0, min(finish, (hour + 1) * 60) - max(begin, hour * 60))
        hours[hour] += peak.extra * overlap / 60
    return hours


def monthly_cost(
    cap: Capacity, peak: LunchPeak, lead: int, cost: CostModel, quote: ServerPrice | None = None
) -> CostReport:
    """Fixed peak capacity against the plan, at the typed price (`cost.hourly_price`) or else the cloud's quote."""
    if cost.hourly_price is not None:
        hourly, source = cost.hourly_price, "typed in (cost.hourly_price)"
    elif quote is not None:
        hourly, source = quote.hourly, quote.describe()
    else:
        raise ValueError("no price: give cost.hourly_price or the cloud's quote")
    plan = planned_servers(cap, peak, lead)
    need = cost.load_profile or [math.ceil(h) for h in plan]
    fixed = max(max(need), math.ceil(max(plan)))
    fixed_monthly = fixed * 24 * cost.days_per_month * hourly
    scheduled = sum(plan) * cost.days_per_month * hourly
    saving = 100.0 * (fixed_monthly - scheduled) / fixed_monthly if fixed_monthly else 0.0
    short = [h for h in range(24) if plan[h] < need[h]]
    return CostReport(
        fixed_servers=fixed,
        fixed_monthly=round(fixed_monthly, 2),
        scheduled_monthly=round(scheduled, 2),
        saving_percent=round(saving, 1),
        currency=cost.currency,
        short_hours=short,
        hourly_price=hourly,
        price_source=source,
    )
