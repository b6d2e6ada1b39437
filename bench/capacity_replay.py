"""Bench (issue 16): capacity strategies replayed over 28 days of generated traffic, minute by minute.

For each profile of `bench.traffic` (56 days generated; the first 28 are the history, the last 28 replayed), a
scaling group (min 2, max 6, 2 servers at the start) is driven by

- `fixed`: the guide's lunch peak, +2 servers (min and desired) from 11:00 minus the lead to 13:00, every day;
- `fixed + alarms`: the same with the guide's CPU alarms (the full configure-autoscaling set-up);
- `alarms`: the CPU alarms alone (> 70 % for 5 min: +1; < 20 % for 15 min: -1; 300 s cooldown);
- `forecast + alarms`: each day, the steps `plan-capacity` would write, from the days before it
  (`flows.capacity_plan_steps`: forecast, servers at the 70 % target, ahead by the lead, merged), with the alarms.

A launched server bills from its launch and serves LAUNCH_MINUTES later (the launch-to-healthy time; the lead is
that plus a 5-minute margin); scale-in is at once, newest first. A minute is under capacity when its load needs
more than the serving servers at SATURATED CPU. Measured per strategy: minutes under capacity (all, and within the
forecastable peaks: the profile's peaks on days whose week before had the same peaks), server-hours and their cost
at the catalogue type's list price. Writes bench/results/capacity_replay.json and docs/capacity-replay.png.

    uv run python -m bench.capacity_replay
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bench.common import print_table, write_results
from bench.forecast_methods import PER_SERVER_FULL, PER_SERVER_TARGET, SATURATED
from bench.traffic import MINUTES_PER_DAY, PROFILES, Profile, generate, minute_of, slots
from flows.capacity_plan_steps.forecast import by_day, forecast_day, slot_start
from flows.capacity_plan_steps.steps import CapacityStep, plan_day

DAYS, REPLAYED = 56, 28
MIN_SIZE, MAX_SIZE, START = 2, 6, 2
LAUNCH_MINUTES, MARGIN_MINUTES = 4, 5
LEAD = LAUNCH_MINUTES + MARGIN_MINUTES
HOURLY_PRICE = 0.5  # replaced by the catalogue's quote once the sandbox prices (tasks/pricing.py)
STRATEGIES = ("fixed", "fixed + alarms", "alarms", "forecast + alarms")


@dataclass
class Group:
    """A scaling group as the sandbox runs it, minute by minute: desired, bounds, servers and when each serves."""

    alarms: bool
    min_size: int = MIN_SIZE
    max_size: int = MAX_SIZE
    desired: int = START
    ready_at: list[int] = field(default_factory=lambda: [-LAUNCH_MINUTES] * START)
    high_run: int = 0
    low_run: int = 0
    cooldown_until: int = -1

    def schedule(self, servers: int, max_size: int = MAX_SIZE) -> None:
        """A scheduled action: min and desired to `servers` (the alarms may add above it, never remove below)."""
        self.min_size = servers
        self.desired = min(max(servers, self.min_size), max_size)

    def serving(self, minute: int) -> int:
        return sum(1 for r in self.ready_at if r <= minute)

    def tick(self, minute: int, load: float) -> tuple[int, int]:
        """One minute: alarms, then converge to desired; (servers billed, servers serving)."""
        serving = self.serving(minute)
        cpu = min(1.0, load / (max(serving, 1) * PER_SERVER_FULL))
        if self.alarms:
            self.high_run = self.high_run + 1 if cpu > 0.70 else 0
            self.low_run = self.low_run + 1 if cpu < 0.20 else 0
            if minute >= self.cooldown_until:
                if self.high_run >= 5 and self.desired < self.max_size:
                    self.desired += 1
                    self.high_run, self.cooldown_until = 0, minute + 5
                elif self.low_run >= 15 and self.desired > self.min_size:
                    self.desired -= 1
                    self.low_run, self.cooldown_until = 0, minute + 5
        self.desired = min(max(self.desired, self.min_size), self.max_size)
        while len(self.ready_at) < self.desired:
            self.ready_at.append(minute + LAUNCH_MINUTES)
        if len(self.ready_at) > self.desired:
            self.ready_at = sorted(self.ready_at)[: self.desired]  # newest (latest ready) first out
        return len(self.ready_at), self.serving(minute)


def forecastable(profile: Profile, index: int) -> list[tuple[int, int]]:
    """The peak windows of day `index` that the same weekday a week before also had (minutes of the day)."""
    weekend = (profile.first_day + timedelta(days=index)).isoweekday() >= 6
    today = {p for p in profile.peaks_on(index) if not (weekend and p.weekdays_only)}
    before = set(profile.peaks_on(index - 7))
    return [(minute_of(p.start), minute_of(p.end)) for p in today & before]


def daily_plans(profile: Profile, series: list[float]) -> dict[int, list[CapacityStep]]:
    past = by_day(slot_start(profile.first_day, 0), slots(series))
    plans = {}
    for index in range(DAYS - REPLAYED, DAYS):
        day = profile.first_day + timedelta(days=index)
        known = {d: v for d, v in past.items() if d < day}
        plans[index] = plan_day(forecast_day(known, day), PER_SERVER_TARGET, LEAD, MIN_SIZE, MAX_SIZE)
    return plans


def replay(
    profile: Profile, strategy: str, series: list[float], plans: dict[int, list[CapacityStep]]
) -> dict[str, Any]:
    group = Group(alarms=strategy != "fixed")
    fixed_out, fixed_in = minute_of("11:00") - LEAD, minute_of("13:00")
    under = under_peak = 0
    billed_minutes = 0
    for index in range(DAYS - REPLAYED, DAYS):
        peaks = forecastable(profile, index)
        steps = {s.minute: s.servers for s in plans[index]}
        for m in range(MINUTES_PER_DAY):
            minute = index * MINUTES_PER_DAY + m
            if strategy.startswith("fixed"):
                if m == fixed_out:
                    group.schedule(START + 2)
                elif m == fixed_in:
                    group.schedule(START)
            elif strategy.startswith("forecast") and m in steps:
                group.schedule(steps[m])
            load = series[minute]
            billed, serving = group.tick(minute, load)
            billed_minutes += billed
            if load > serving * PER_SERVER_FULL * SATURATED:
                under += 1
                under_peak += any(a <= m < b for a, b in peaks)
    hours = billed_minutes / 60
    return {
        "profile": profile.name,
        "strategy": strategy,
        "minutes_under": under,
        "minutes_under_forecastable_peaks": under_peak,
        "server_hours": round(hours, 1),
        "cost": round(hours * HOURLY_PRICE, 2),
    }


def main() -> None:
    started = time.monotonic()
    rows = []
    for profile in PROFILES:
        series = generate(profile, DAYS)
        plans = daily_plans(profile, series)
        rows += [replay(profile, strategy, series, plans) for strategy in STRATEGIES]
    title = f"the last {REPLAYED} of {DAYS} days (launch-to-healthy {LAUNCH_MINUTES} min, lead {LEAD} min)"
    print_table(title, rows)
    failures = []
    for profile in PROFILES:
        mine = next(r for r in rows if r["profile"] == profile.name and r["strategy"] == "forecast + alarms")
        fixed = next(r for r in rows if r["profile"] == profile.name and r["strategy"] == "fixed + alarms")
        if mine["minutes_under_forecastable_peaks"]:
            failures.append(
                f"{profile.name}: {mine['minutes_under_forecastable_peaks']} min under on forecastable peaks"
            )
        if mine["server_hours"] > fixed["server_hours"]:
            failures.append(f"{profile.name}: {mine['server_hours']} server-hours > fixed {fixed['server_hours']}")
    print("\ntarget:", "met" if not failures else "missed: " + "; ".join(failures))
    print(f"({time.monotonic() - started:.1f} s)")
    write_results("capacity_replay", {"rows": rows, "target_missed": failures, "price_per_hour": HOURLY_PRICE})


if __name__ == "__main__":
    main()
