"""Bench (issue 16): which forecast a capacity plan should use, measured on generated traffic.

For each of the benches' traffic profiles below (56 days from the sandbox's generator,
`sandbox.core.traffic_profiles`), each of the last 28 days is forecast per 5-minute slot from the days before it
(at most 28, `flows.capacity_plan_steps.forecast`), by each method; the forecast is then turned into servers as
the plan does (one server carries PER_SERVER_TARGET requests/s at the 70 % CPU target) and compared with
what the day's real slots needed (a slot is under capacity when its load needs more servers at SATURATED % CPU
than the forecast planned). Measured: slots under capacity, their share among the peak slots, the shortfall
(load above the forecast, % of all load) and the excess (forecast above the load), and the planned server-hours.

    uv run python -m bench.forecast_methods
"""

from __future__ import annotations

import math
import time
from datetime import date, datetime, timedelta
from datetime import time as clock
from typing import Any

from bench.common import print_table, write_results
from flows.capacity_plan_steps.forecast import METHODS, SLOTS_PER_DAY, by_day, forecast_day, slot_start
from sandbox.core.traffic_profiles import BEIJING, Peak, PeakMove, Spike, TrafficProfile, requests_per_second

DAYS, EVALUATED = 56, 28
FIRST_DAY = date(2026, 11, 2)  # a Monday
DAY_RPS, NIGHT_RPS = 18.0, 4.0  # requests/s by day outside the peaks, and 01:00-06:00


def peak(start: str, end: str, added_rps: float, weekdays_only: bool = False) -> Peak:
    """A peak `added_rps` above the day level, reached 10 minutes after `start`'s ramp began."""
    height = (DAY_RPS + added_rps) / DAY_RPS
    return Peak(start=start, end=end, height=height, ramp_minutes=10, weekdays_only=weekdays_only)


def traffic(peaks: list[Peak], **update: Any) -> TrafficProfile:
    """The benches' mini-program: 10 % noise on each minute, 5 % from day to day."""
    fields = {"day_rps": DAY_RPS, "night_factor": NIGHT_RPS / DAY_RPS, "peaks": peaks, "noise": 0.10}
    return TrafficProfile.model_validate({**fields, "day_noise": 0.05, **update})


def day_at(index: int, hhmm: str = "00:00") -> datetime:
    """Day `index` of the generated range at `hhmm`, Beijing time."""
    return datetime.combine(FIRST_DAY + timedelta(days=index), clock.fromisoformat(hhmm), BEIJING)


LUNCH, SHIFTED, EVENING = peak("11:00", "13:00", 26.0), peak("11:30", "13:30", 26.0), peak("19:00", "21:00", 22.0)

# The benches' profiles. The guide's: a lunch peak 11:00-13:00 that its +2 servers carry (2 servers by day, 4 at the
# peak, each at most ~70 % CPU at 20 requests/s per server at 100 %).
PROFILES: dict[str, TrafficProfile] = {
    "guide lunch peak": traffic([LUNCH]),
    "shifted peak 11:30-13:30": traffic([SHIFTED]),
    "lunch + evening peak": traffic([SHIFTED, EVENING]),
    "quiet weekends": traffic([peak("11:00", "13:00", 26.0, weekdays_only=True)], weekend_factor=0.45),
    "peak moves on day 42": traffic([LUNCH], moves=[PeakMove(on=FIRST_DAY + timedelta(days=42), peaks=[SHIFTED])]),
    "unforecastable spike": traffic(
        [LUNCH], spike=Spike(at=day_at(47, "16:00"), minutes=60, height=(DAY_RPS + 30.0) / DAY_RPS)
    ),
}


def generate(profile: TrafficProfile, days: int, seed: int = 1) -> list[float]:
    """Requests/s for each minute of `days` days from FIRST_DAY 00:00 Beijing time."""
    return requests_per_second(profile, day_at(0), days * 24 * 60, seed=seed)


def slots(per_minute: list[float], minutes: int = 5) -> list[float]:
    """The mean of each `minutes`-long slot (what Cloud Monitor's 300 s period reports)."""
    return [sum(per_minute[i : i + minutes]) / minutes for i in range(0, len(per_minute), minutes)]


PER_SERVER_FULL = 20.0  # requests/s one server serves at 100 % CPU (the sandbox's 1-core figure: 50 ms each)
PER_SERVER_TARGET = PER_SERVER_FULL * 0.70  # the plan's target: the high CPU alarm's threshold
SATURATED = 0.90  # above this CPU a server's latency climbs steeply: under capacity


def measure(name: str, profile: TrafficProfile, method: str) -> dict[str, Any]:
    series = slots(generate(profile, DAYS))
    past = by_day(slot_start(FIRST_DAY, 0), series)
    under = peak_slots = peak_under = 0
    short = excess = total = hours = 0.0
    for offset in range(DAYS - EVALUATED, DAYS):
        day = FIRST_DAY + timedelta(days=offset)
        predicted = forecast_day(past, day, method)  # type: ignore[arg-type]
        actual = [v or 0.0 for v in past[day]]
        level = sorted(actual)[SLOTS_PER_DAY // 2]
        for f, a in zip(predicted, actual, strict=True):
            planned = max(1, math.ceil(f / PER_SERVER_TARGET - 1e-9))
            needs = math.ceil(a / (PER_SERVER_FULL * SATURATED) - 1e-9)
            is_peak = a > 1.5 * level
            peak_slots += is_peak
            if planned < needs:
                under += 1
                peak_under += is_peak
            short += max(0.0, a - f)
            excess += max(0.0, f - a)
            total += a
            hours += planned * 5 / 60
    return {
        "profile": name,
        "method": method,
        "slots_under": under,
        "peak_slots_under_pct": round(100 * peak_under / max(peak_slots, 1), 1),
        "shortfall_pct": round(100 * short / total, 1),
        "excess_pct": round(100 * excess / total, 1),
        "server_hours": round(hours, 1),
    }


def main() -> None:
    started = time.monotonic()
    rows = [measure(name, profile, method) for name, profile in PROFILES.items() for method in METHODS]
    print_table("forecast methods, the last 28 of 56 days of each profile", rows)
    totals = [
        {
            "method": m,
            "slots_under": sum(r["slots_under"] for r in rows if r["method"] == m),
            "server_hours": round(sum(r["server_hours"] for r in rows if r["method"] == m), 1),
        }
        for m in METHODS
    ]
    print_table("all profiles", totals)
    print(f"({time.monotonic() - started:.1f} s)")
    write_results("forecast_methods", {"rows": rows, "totals": totals})


if __name__ == "__main__":
    main()
