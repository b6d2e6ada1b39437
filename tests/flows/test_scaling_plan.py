"""The declared Auto Scaling state, computed without a cloud: bounds, the lunch-peak schedule and its cost."""

from __future__ import annotations

from datetime import datetime

import pytest

from flows.autoscaling_steps import plan
from flows.parameters import AutoScalingParameters, CostModel, LunchPeak
from tasks.pricing import ServerPrice

NOW = datetime.fromisoformat("2026-12-01T09:00:00+08:00")  # a Tuesday, Beijing time


def test_default_bounds_keep_the_tier_and_leave_room_for_the_peak():
    cap, problems = plan.capacity(AutoScalingParameters(), existing=2)
    assert (cap.min_size, cap.desired, cap.max_size) == (2, 2, 6) and problems == []
    cap, problems = plan.capacity(AutoScalingParameters(max_size=3), existing=2)
    assert problems == ["the peak needs 2 + 2 servers, more than max_size 3: raise max_size"]
    _, problems = plan.capacity(AutoScalingParameters(max_size=1, peak={"enabled": False}), existing=2)
    assert "the tier has 2 servers to attach, more than max_size 1: raise max_size" in problems


def test_the_peak_fires_early_by_the_lead_time_daily_until_end_time():
    cap = plan.Capacity(min_size=2, desired=2, max_size=6)
    lead = plan.lead_minutes(LunchPeak(), launch_seconds=61)  # 2 whole minutes + 5 of margin
    assert lead == 7
    (out, back), problems = plan.peak_actions("business", LunchPeak(), cap, lead, NOW)
    assert problems == []
    assert (out.name, out.recurrence, out.start_time) == ("tcscale-business-peak-out", "53 10 * * *",
                                                         "2026-12-01T10:53:00+08:00")  # fmt: skip
    assert (out.min_size, out.desired, out.max_size) == (4, 4, 6)
    assert (back.recurrence, back.start_time, back.desired, back.min_size) == (
        "0 13 * * *", "2026-12-01T13:00:00+08:00", 2, 2)  # fmt: skip
    assert out.end_time == back.end_time == "2027-12-01T10:53:00+08:00"


def test_a_peak_too_close_moves_to_the_next_matching_day():
    cap = plan.Capacity(min_size=1, desired=1, max_size=4)
    late = datetime.fromisoformat("2026-12-01T10:50:00+08:00")
    weekdays = LunchPeak(days_of_week="1-5", lead_minutes=10)
    (out, back), _ = plan.peak_actions("session", weekdays, cap, 10, late)
    assert out.start_time == "2026-12-02T10:50:00+08:00" and out.recurrence == "50 10 * * 1-5"
    friday = datetime.fromisoformat("2026-12-04T12:00:00+08:00")
    (out, back), _ = plan.peak_actions("session", weekdays, cap, 10, friday)
    assert out.start_time.startswith("2026-12-07T10:50") and back.start_time.startswith("2026-12-07T13:00")


@pytest.mark.parametrize(
    ("end_time", "expected"),
    [
        ("2020-01-01T13:00:00+08:00", "is in the past"),
        ("2026-12-01T12:00:00+08:00", "before the first peak ends"),
        ("next week", "is not YYYY-MM-DDThh:mm:ss+08:00"),
        ("2027-01-01T13:00:00", "has no UTC offset"),
    ],
)
def test_bad_end_times_are_named(end_time: str, expected: str):
    cap = plan.Capacity(min_size=1, desired=1, max_size=4)
    _, problems = plan.peak_actions("business", LunchPeak(end_time=end_time), cap, 6, NOW)
    assert any(expected in p for p in problems), problems


def test_a_lead_before_midnight_is_refused():
    cap = plan.Capacity(min_size=1, desired=1, max_size=4)
    _, problems = plan.peak_actions("business", LunchPeak(start="00:10", end="01:00"), cap, 20, NOW)
    assert any("before midnight" in p for p in problems)


def test_monthly_cost_of_fixed_peak_capacity_against_the_plan():
    cap = plan.Capacity(min_size=2, desired=2, max_size=6)
    report = plan.monthly_cost(cap, LunchPeak(), 0, CostModel(hourly_price=1.0, days_per_month=30))
    # fixed: 4 servers x 24 h x 30 d = 2880; plan: (2 x 24 + 2 x 2) x 30 = 1560
    assert (report.fixed_servers, report.fixed_monthly, report.scheduled_monthly) == (4, 2880.0, 1560.0)
    assert report.saving_percent == 45.8
    profile = [2] * 24
    profile[12] = 5  # the user's own load: one hour needs 5 servers
    report = plan.monthly_cost(cap, LunchPeak(), 0, CostModel(hourly_price=1.0, load_profile=profile))
    assert report.fixed_servers == 5 and report.short_hours == [12]
    assert "CPU alarms cover it" in "\n".join(report.markdown())


def test_alarm_policies_as_the_api_takes_them():
    high, low = plan.alarm_policies("business", AutoScalingParameters())
    assert (high.operator, high.threshold, high.period, high.continuous_time, high.adjustment) == (
        "GREATER_THAN", 70, 60, 5, 1)  # fmt: skip
    assert (low.operator, low.threshold, low.period, low.continuous_time, low.adjustment) == (
        "LESS_THAN", 20, 300, 3, -1)  # fmt: skip


def test_a_typed_price_overrides_the_clouds_quote() -> None:
    cap = plan.Capacity(min_size=2, desired=2, max_size=6)
    quote = ServerPrice(instance_type="S5.SMALL2", charge_type="POSTPAID_BY_HOUR", zone="z", hourly=2.0, quoted={})
    quoted = plan.monthly_cost(cap, LunchPeak(), 0, CostModel(), quote)
    assert quoted.hourly_price == 2.0 and "InquiryPriceRunInstances" in quoted.price_source
    typed = plan.monthly_cost(cap, LunchPeak(), 0, CostModel(hourly_price=1.0), quote)
    assert typed.hourly_price == 1.0 and typed.fixed_monthly == quoted.fixed_monthly / 2
    assert "typed" in typed.price_source
