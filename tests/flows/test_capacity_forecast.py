"""The forecast and the capacity steps of plan-capacity, without a cloud: generated histories of known shapes."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from bench.forecast_methods import EVENING, FIRST_DAY, LUNCH, SHIFTED, generate, peak, slots, traffic
from flows.capacity_plan_steps.forecast import SLOTS_PER_DAY, ForecastError, by_day, forecast_day, slot_start
from flows.capacity_plan_steps.steps import ahead, merge, plan_day, servers_at, servers_needed
from sandbox.core.traffic_profiles import PeakMove, TrafficProfile

MONDAY = FIRST_DAY


def history(profile: TrafficProfile, days: int) -> dict[date, list[float | None]]:
    return by_day(slot_start(FIRST_DAY, 0), slots(generate(profile, days)))


def mean(values: list[float], start: str, end: str) -> float:
    a, b = (int(t[:2]) * 12 + int(t[3:]) // 5 for t in (start, end))
    return sum(values[a:b]) / (b - a)


def test_both_peaks_of_four_weeks_are_forecast_for_the_next_day():
    profile = traffic([SHIFTED, EVENING])
    past = history(profile, 28)
    day = MONDAY + timedelta(days=28)
    forecast = forecast_day(past, day)
    assert len(forecast) == SLOTS_PER_DAY
    daytime = mean(forecast, "15:00", "18:00")
    assert mean(forecast, "11:40", "13:20") > daytime + 20 and mean(forecast, "19:10", "20:50") > daytime + 15
    assert mean(forecast, "10:30", "11:20") < daytime + 5  # the peak starts at 11:30, not at the guide's 11:00
    assert mean(forecast, "02:00", "05:00") < 8


def test_quiet_weekends_are_forecast_quiet():
    profile = traffic([peak("11:00", "13:00", 26.0, weekdays_only=True)], weekend_factor=0.45)
    past = history(profile, 26)  # ends on a Friday
    saturday = MONDAY + timedelta(days=26)
    assert saturday.isoweekday() == 6
    assert max(forecast_day(past, saturday)) < 15 < max(forecast_day(past, saturday + timedelta(days=2)))


def test_a_peak_that_moved_two_weekdays_ago_is_followed():
    moves = [PeakMove(on=MONDAY + timedelta(days=24), peaks=[SHIFTED])]  # a campaign moves the peak on Thursday
    profile = traffic([LUNCH], moves=moves)
    forecast = forecast_day(history(profile, 28), MONDAY + timedelta(days=28))
    assert mean(forecast, "13:00", "13:30") > 35  # the old quantile alone says ~20 here


def test_less_than_two_weeks_of_history_is_refused_with_the_fix():
    past = history(traffic([LUNCH]), 13)
    with pytest.raises(ForecastError, match=r"13 day\(s\) of history .*at least 14 needed"):
        forecast_day(past, MONDAY + timedelta(days=13))


def test_servers_follow_the_forecast_within_the_bounds():
    assert servers_needed([0.0, 13.9, 14.0, 14.1, 200.0], 14.0, 1, 6) == [1, 1, 1, 2, 6]
    assert ahead([1, 1, 1, 3, 3, 1, 1], 9) == [1, 3, 3, 3, 3, 1, 1]  # 9 min: two slots ahead; down at once


def test_merged_steps_never_go_below_what_is_needed():
    per_slot = [2] * 100 + [3] * 3 + [2] * 4 + [5] * 20 + [4] * 2 + [5] * 10 + [2] * 149
    steps = merge(per_slot, max_steps=3)
    assert len(steps) <= 3 and steps[0].minute == 0
    assert all(servers_at(steps, slot * 5) >= need for slot, need in enumerate(per_slot))
    assert [s.servers for s in merge(per_slot, max_steps=8)] == [2, 3, 5, 2]  # dips under an hour are filled


def test_the_day_plan_is_ahead_of_the_peak_by_the_lead():
    forecast = [18.0] * SLOTS_PER_DAY
    for slot in range(11 * 12, 13 * 12):
        forecast[slot] = 50.0
    steps = plan_day(forecast, per_server=14.0, lead_minutes=9, min_size=2, max_size=6)
    assert [(s.at(), s.servers) for s in steps] == [("00:00", 2), ("10:50", 4), ("13:00", 2)]
    with pytest.raises(ValueError, match="288 slots"):
        plan_day(forecast[:10], 14.0, 9, 2, 6)
