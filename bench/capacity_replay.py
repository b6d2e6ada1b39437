"""Bench (issue 16): capacity strategies replayed over 28 days of generated traffic, minute by minute.

For each profile of `bench.forecast_methods` (56 days generated; the first 28 are the history, the last 28 replayed), a
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
at the list price the sandbox quotes for S5.SMALL2 (sandbox/cvm/prices.py).
Writes bench/results/capacity_replay.json and the README's chart, docs/capacity-replay.png.

    uv run python -m bench.capacity_replay
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, print_table, write_results
from bench.forecast_methods import (
    FIRST_DAY,
    PER_SERVER_FULL,
    PER_SERVER_TARGET,
    PROFILES,
    SATURATED,
    generate,
    slots,
)
from flows.capacity_plan_steps.forecast import by_day, forecast_day, slot_start
from flows.capacity_plan_steps.steps import CapacityStep, plan_day
from sandbox.core.traffic_profiles import TrafficProfile, peaks_on
from sandbox.cvm import prices

DAYS, REPLAYED = 56, 28
MIN_SIZE, MAX_SIZE, START = 2, 6, 2
LAUNCH_MINUTES, MARGIN_MINUTES = 4, 5
LEAD = LAUNCH_MINUTES + MARGIN_MINUTES
INSTANCE_TYPE = "S5.SMALL2"  # 1 core: 20 requests/s at 100 % CPU (the sandbox's 50 ms a request)
HOURLY_PRICE = prices.hourly(INSTANCE_TYPE)  # the list price InquiryPriceRunInstances quotes (sandbox/cvm/prices.py)
STRATEGIES = ("fixed", "fixed + alarms", "alarms", "forecast + alarms")
MINUTES_PER_DAY = 24 * 60


def minute_of(hhmm: str) -> int:
    hour, minute = hhmm.split(":")
    return int(hour) * 60 + int(minute)


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


def forecastable(profile: TrafficProfile, index: int) -> list[tuple[int, int]]:
    """The peak windows of day `index` that the same weekday a week before also had (minutes of the day)."""
    day = FIRST_DAY + timedelta(days=index)
    before = peaks_on(profile, day - timedelta(days=7))
    return [(minute_of(p.start), minute_of(p.end)) for p in peaks_on(profile, day) if p in before]


def daily_plans(series: list[float]) -> dict[int, list[CapacityStep]]:
    past = by_day(slot_start(FIRST_DAY, 0), slots(series))
    plans = {}
    for index in range(DAYS - REPLAYED, DAYS):
        day = FIRST_DAY + timedelta(days=index)
        known = {d: v for d, v in past.items() if d < day}
        plans[index] = plan_day(forecast_day(known, day), PER_SERVER_TARGET, LEAD, MIN_SIZE, MAX_SIZE)
    return plans


def replay(
    name: str,
    profile: TrafficProfile,
    strategy: str,
    series: list[float],
    plans: dict[int, list[CapacityStep]],
    trace: list[float] | None = None,
    trace_day: int = -1,
) -> dict[str, Any]:
    """One strategy over the replayed days; `trace` gets the serving capacity (requests/s) of each minute of
    `trace_day`."""
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
            if trace is not None and index == trace_day:
                trace.append(serving * PER_SERVER_FULL * SATURATED)
            if load > serving * PER_SERVER_FULL * SATURATED:
                under += 1
                under_peak += any(a <= m < b for a, b in peaks)
    hours = billed_minutes / 60
    return {
        "profile": name,
        "strategy": strategy,
        "minutes_under": under,
        "minutes_under_forecastable_peaks": under_peak,
        "server_hours": round(hours, 1),
        "cost": round(hours * HOURLY_PRICE, 2),
    }


CHART_PROFILE, CHART_DAY = 2, 44  # lunch + evening peak, a Wednesday of the replay
COLOURS = {"fixed + alarms": "#d62728", "alarms": "#ff7f0e", "forecast + alarms": "#2ca02c"}


def chart(
    name: str, profile: TrafficProfile, series: list[float], plans: dict[int, list[CapacityStep]], rows: list[dict]
) -> str:
    """One day of the replay as SVG: the load per minute, and what each strategy could serve."""
    w, h, left, right, top, bottom = 900, 420, 56, 20, 48, 130
    traces = {}
    for strategy in COLOURS:
        trace: list[float] = []
        replay(name, profile, strategy, series, plans, trace, CHART_DAY)
        traces[strategy] = trace
    load = series[CHART_DAY * MINUTES_PER_DAY : (CHART_DAY + 1) * MINUTES_PER_DAY]
    peak = max([*load, *(v for t in traces.values() for v in t)]) * 1.08

    def x(minute: float) -> float:
        return left + minute / MINUTES_PER_DAY * (w - left - right)

    def y(value: float) -> float:
        return h - bottom - value / peak * (h - top - bottom)

    day = FIRST_DAY + timedelta(days=CHART_DAY)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="Helvetica, Arial, sans-serif"'
        ' font-size="12">',
        f'<rect width="{w}" height="{h}" fill="#fff"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">{name}, {day:%a %Y-%m-%d}: the load, '
        "and what each strategy serves</text>",
    ]
    for value in range(0, int(peak) + 1, 10):
        out.append(f'<line x1="{left}" y1="{y(value):.1f}" x2="{w - right}" y2="{y(value):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value}</text>')
    for hour in range(0, 25, 3):
        out.append(f'<text x="{x(hour * 60):.1f}" y="{h - bottom + 16}" text-anchor="middle">{hour:02d}:00</text>')
    out.append(f'<text x="8" y="{top - 8}" fill="#555">requests/s</text>')
    path = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in enumerate(load))
    out.append(f'<polyline points="{path}" fill="none" stroke="#888" stroke-width="1"/>')
    for offset, (strategy, colour) in zip((-2.5, 0.0, 2.5), COLOURS.items(), strict=True):  # apart where equal
        path = " ".join(f"{x(m):.1f},{y(v) + offset:.1f}" for m, v in enumerate(traces[strategy]))
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.2"/>')
    legend_y = h - bottom + 38
    for i, (strategy, colour) in enumerate([("load", "#888"), *COLOURS.items()]):
        lx = left + i * 210
        out.append(f'<line x1="{lx}" y1="{legend_y - 4}" x2="{lx + 24}" y2="{legend_y - 4}" stroke="{colour}" '
                   'stroke-width="3"/>')  # fmt: skip
        out.append(f'<text x="{lx + 30}" y="{legend_y}">{strategy}</text>')
    totals = {s: [r for r in rows if r["strategy"] == s] for s in COLOURS}
    out.append(f'<text x="{left}" y="{legend_y + 24}" fill="#333">over 28 days of each of the 6 profiles:</text>')
    for i, (s, rs) in enumerate(totals.items()):
        under, hours = sum(r["minutes_under"] for r in rs), sum(r["server_hours"] for r in rs)
        line = f"{s}: {under:,} minutes under capacity, {hours:,.0f} server-hours"
        out.append(f'<text x="{left + 12}" y="{legend_y + 42 + 16 * i}" fill="{COLOURS[s]}">{line}</text>')
    return "\n".join([*out, "</svg>"])


def write_chart(svg: str) -> None:
    """bench/results/capacity-replay.svg, and the PNG the README shows (docs/, rendered by Debian's chromium)."""
    svg_path = RESULTS / "capacity-replay.svg"
    RESULTS.mkdir(parents=True, exist_ok=True)
    svg_path.write_text(svg)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        print(f"chart: {svg_path.relative_to(ROOT)} (no chromium: no PNG)")
        return
    png = ROOT / "docs" / "capacity-replay.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={png}",
         "--window-size=900,420", svg_path.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    print(f"chart: {png.relative_to(ROOT)}")


def main() -> None:
    started = time.monotonic()
    rows = []
    drawn: tuple[str, TrafficProfile, list[float], dict[int, list[CapacityStep]]] | None = None
    for i, (name, profile) in enumerate(PROFILES.items()):
        series = generate(profile, DAYS)
        plans = daily_plans(series)
        rows += [replay(name, profile, strategy, series, plans) for strategy in STRATEGIES]
        if i == CHART_PROFILE:
            drawn = (name, profile, series, plans)
    title = f"the last {REPLAYED} of {DAYS} days (launch-to-healthy {LAUNCH_MINUTES} min, lead {LEAD} min)"
    print_table(title, rows)
    failures = []
    for name in PROFILES:
        mine = next(r for r in rows if r["profile"] == name and r["strategy"] == "forecast + alarms")
        fixed = next(r for r in rows if r["profile"] == name and r["strategy"] == "fixed + alarms")
        if mine["minutes_under_forecastable_peaks"]:
            failures.append(f"{name}: {mine['minutes_under_forecastable_peaks']} min under on forecastable peaks")
        if mine["server_hours"] > fixed["server_hours"]:
            failures.append(f"{name}: {mine['server_hours']} server-hours > fixed {fixed['server_hours']}")
    print("\ntarget:", "met" if not failures else "missed: " + "; ".join(failures))
    print(f"({time.monotonic() - started:.1f} s)")
    assert drawn is not None
    write_chart(chart(*drawn, rows))
    print(f"cost: {HOURLY_PRICE} CNY per {INSTANCE_TYPE} server-hour (pay-as-you-go list price)")
    write_results("capacity_replay", {"rows": rows, "target_missed": failures, "price_per_hour": HOURLY_PRICE})


if __name__ == "__main__":
    main()
