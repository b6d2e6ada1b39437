"""Bench (issue 16): which forecast a capacity plan should use, measured on generated traffic.

For each profile of `bench.traffic` (56 days), each of the last 28 days is forecast per 5-minute slot from the days
before it (at most 28, `flows.capacity_plan_steps.forecast`), by each method; the forecast is then turned into
servers as the plan does (one server carries PER_SERVER_TARGET requests/s at the 70 % CPU target) and compared with
what the day's real slots needed (a slot is under capacity when its load needs more servers at SATURATED % CPU
than the forecast planned). Measured: slots under capacity, their share among the peak slots, the shortfall
(load above the forecast, % of all load) and the excess (forecast above the load), and the planned server-hours.

    uv run python -m bench.forecast_methods
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

from bench.common import print_table, write_results
from bench.traffic import PROFILES, Profile, generate, slots
from flows.capacity_plan_steps.forecast import METHODS, SLOTS_PER_DAY, by_day, forecast_day, slot_start

DAYS, EVALUATED = 56, 28
PER_SERVER_FULL = 20.0  # requests/s one server serves at 100 % CPU (the sandbox's 1-core figure: 50 ms each)
PER_SERVER_TARGET = PER_SERVER_FULL * 0.70  # the plan's target: the high CPU alarm's threshold
SATURATED = 0.90  # above this CPU a server's latency climbs steeply: under capacity


def measure(profile: Profile, method: str) -> dict[str, Any]:
    series = slots(generate(profile, DAYS))
    past = by_day(slot_start(profile.first_day, 0), series)
    under = peak_slots = peak_under = 0
    short = excess = total = hours = 0.0
    for offset in range(DAYS - EVALUATED, DAYS):
        day = profile.first_day + timedelta(days=offset)
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
        "profile": profile.name,
        "method": method,
        "slots_under": under,
        "peak_slots_under_pct": round(100 * peak_under / max(peak_slots, 1), 1),
        "shortfall_pct": round(100 * short / total, 1),
        "excess_pct": round(100 * excess / total, 1),
        "server_hours": round(hours, 1),
    }


def main() -> None:
    started = time.monotonic()
    rows = [measure(profile, method) for profile in PROFILES for method in METHODS]
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
