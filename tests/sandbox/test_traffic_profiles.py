"""The traffic profile generator: daily and weekly shape, peaks, noise, spike (a pure function)."""

from datetime import datetime, timedelta

from sandbox.core.traffic_profiles import (
    BEIJING,
    PRESETS,
    Peak,
    PeakMove,
    day_level,
    peaks_on,
    rate_at,
    requests_per_second,
    with_spike,
)

MONDAY = datetime(2026, 3, 2, tzinfo=BEIJING)


def at(day: datetime, clock: str) -> datetime:
    hours, minutes = map(int, clock.split(":"))
    return day.replace(hour=hours, minute=minutes)


def test_peaks_sit_where_the_profile_puts_them() -> None:
    guide, shifted = PRESETS["guide-lunch"], PRESETS["lunch-and-evening"]
    assert rate_at(guide, at(MONDAY, "12:00")) == 3 * rate_at(guide, at(MONDAY, "16:00"))
    assert rate_at(guide, at(MONDAY, "04:00")) < 0.5 * rate_at(guide, at(MONDAY, "16:00"))
    assert rate_at(shifted, at(MONDAY, "11:05")) < 1.5 * rate_at(shifted, at(MONDAY, "16:00"))  # starts 11:30
    assert rate_at(shifted, at(MONDAY, "13:20")) == 3 * rate_at(shifted, at(MONDAY, "16:00"))
    assert rate_at(shifted, at(MONDAY, "20:00")) > 2 * rate_at(shifted, at(MONDAY, "17:00"))


def test_quiet_weekends_and_a_spike() -> None:
    quiet = PRESETS["quiet-weekends"]
    saturday = MONDAY + timedelta(days=5)
    assert rate_at(quiet, at(saturday, "12:00")) < 0.5 * rate_at(quiet, at(MONDAY, "12:00"))
    spiked = with_spike(quiet, at(MONDAY + timedelta(days=2), "15:00"), minutes=30, height=5)
    assert rate_at(spiked, at(MONDAY + timedelta(days=2), "15:10")) == 5 * rate_at(quiet, at(MONDAY, "16:00"))
    assert rate_at(spiked, at(MONDAY + timedelta(days=2), "15:40")) == rate_at(quiet, at(MONDAY, "15:40"))


def test_series_are_noisy_deterministic_and_one_value_per_step() -> None:
    profile = PRESETS["guide-lunch"]
    one = requests_per_second(profile, MONDAY, minutes=1440, seed=1)
    assert len(one) == 1440 and one == requests_per_second(profile, MONDAY, minutes=1440, seed=1)
    assert one != requests_per_second(profile, MONDAY, minutes=1440, seed=2)
    assert len(requests_per_second(profile, MONDAY, minutes=1440, step_seconds=300)) == 288
    noiseless = [rate_at(profile, MONDAY + timedelta(minutes=m)) for m in range(1440)]
    relative = [abs(a / b - 1) for a, b in zip(one, noiseless, strict=True)]
    assert 0.02 < sum(relative) / len(relative) < 0.08  # noise 5 %: mean absolute deviation ~4 %


def test_a_peak_that_moves_on_a_given_day() -> None:
    thursday = MONDAY + timedelta(days=3)
    moved = PRESETS["guide-lunch"].model_copy(
        update={"moves": [PeakMove(on=thursday.date(), peaks=[Peak(start="11:30", end="13:30", height=3.0)])]}
    )
    wednesday = MONDAY + timedelta(days=2)
    assert [p.start for p in peaks_on(moved, wednesday.date())] == ["11:00"]
    assert [p.start for p in peaks_on(moved, thursday.date() + timedelta(days=9))] == ["11:30"]
    assert rate_at(moved, at(wednesday, "13:20")) < 1.5 * rate_at(moved, at(wednesday, "16:00"))
    assert rate_at(moved, at(thursday, "13:20")) == 3 * rate_at(moved, at(thursday, "16:00"))
    assert rate_at(moved, at(thursday, "11:00")) < 1.5 * rate_at(moved, at(thursday, "16:00"))


def test_day_to_day_noise_is_one_level_per_day_whatever_the_series_start() -> None:
    profile = PRESETS["guide-lunch"].model_copy(update={"noise": 0.0, "day_noise": 0.1})
    week = requests_per_second(profile, MONDAY, minutes=7 * 1440, seed=3)
    levels = [day_level(profile, (MONDAY + timedelta(days=d)).date(), seed=3) for d in range(7)]
    assert len(set(levels)) == 7 and all(0.5 <= level < 1.5 for level in levels)
    for d, level in enumerate(levels):
        noon = d * 1440 + 12 * 60
        assert week[noon] == rate_at(profile, MONDAY + timedelta(minutes=noon)) * level
    tuesday_on = requests_per_second(profile, MONDAY + timedelta(days=1), minutes=1440, seed=3)
    assert tuesday_on == week[1440 : 2 * 1440]  # the same day, the same level, wherever the series starts
    assert day_level(profile.model_copy(update={"day_noise": 0.0}), MONDAY.date(), seed=3) == 1.0
