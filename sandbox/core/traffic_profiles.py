"""Traffic profiles: a mini-program's request rate over days and weeks, as a small pure function.

A `TrafficProfile` describes a tier's requests per second in Beijing time: a daily shape (a quiet night, a
daytime level), peaks on top of it (the guide's lunch peak 11:00-13:00, a shifted one, an evening one), peaks
that move from a given day on (a campaign), a weekly shape (quiet weekends), day-to-day and per-value noise, and
optionally one spike no history could foresee.

    from sandbox.core.traffic_profiles import PRESETS, requests_per_second
    rates = requests_per_second(PRESETS["lunch-and-evening"], start, minutes=28 * 1440, seed=7)

`rate_at(profile, moment)` is the noiseless rate at one moment; `requests_per_second(profile, start,
minutes, step_seconds, seed)` the noisy series, one value per step from `start` (deterministic for a seed);
`peaks_on(profile, day)` the peaks a day has, `day_level(profile, day, seed)` that day's drawn level.
Nothing here touches the sandbox: the monitor's history route (`POST /_sandbox/monitor/history`) turns the
series into Cloud Monitor metrics, and the replay benchmark reuses it as is.
"""

import math
import random
from datetime import date, datetime, timedelta, timezone

from pydantic import BaseModel, Field, model_validator

BEIJING = timezone(timedelta(hours=8))


def _minute_of_day(clock: str) -> int:
    hours, minutes = clock.split(":")
    value = int(hours) * 60 + int(minutes)
    if not 0 <= value <= 24 * 60:
        raise ValueError(f"not a time of day: {clock}")
    return value


class Peak(BaseModel):
    """A daily peak: the rate rises to `height` times the day level between `start` and `end` (HH:MM, Beijing)."""

    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    end: str = Field(pattern=r"^\d{2}:\d{2}$")
    height: float = Field(3.0, gt=0, description="the rate during the peak, as a multiple of the day level")
    ramp_minutes: int = Field(15, ge=0, le=180, description="how long the rise (and the fall) takes")
    weekdays_only: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Peak":
        if _minute_of_day(self.end) <= _minute_of_day(self.start):
            raise ValueError(f"a peak ends after it starts: {self.start}-{self.end}")
        return self


class Spike(BaseModel):
    """One burst at a given moment, in no day's pattern (a campaign going viral)."""

    at: datetime = Field(description="when it starts (with an offset)")
    minutes: int = Field(60, gt=0)
    height: float = Field(4.0, gt=0, description="the rate during the spike, as a multiple of the day level")


class PeakMove(BaseModel):
    """From `on` (a Beijing date) on, these peaks instead of the profile's (a campaign moves the lunch peak)."""

    on: date
    peaks: list[Peak]


class TrafficProfile(BaseModel):
    day_rps: float = Field(10.0, gt=0, description="requests/s at the daytime level, outside the peaks")
    night_factor: float = Field(0.3, ge=0, le=1, description="the night's rate (01:00-06:00) as a share of it")
    peaks: list[Peak] = Field(default_factory=list)
    moves: list[PeakMove] = Field(default_factory=list, description="peaks that change from a given day on")
    weekend_factor: float = Field(1.0, ge=0, description="Saturdays and Sundays, as a multiple of a weekday")
    noise: float = Field(0.05, ge=0, le=1, description="relative standard deviation of each value")
    day_noise: float = Field(0.0, ge=0, le=0.5, description="relative standard deviation of each day's level")
    spike: Spike | None = None


def peaks_on(profile: TrafficProfile, day: date) -> list[Peak]:
    """The peaks of `day`: the latest move on or before it (else the profile's), weekdays-only ones not at weekends."""
    peaks = profile.peaks
    for move in sorted(profile.moves, key=lambda m: m.on):
        if move.on <= day:
            peaks = move.peaks
    weekend = day.weekday() >= 5
    return [p for p in peaks if not (p.weekdays_only and weekend)]


def day_level(profile: TrafficProfile, day: date, seed: int = 0) -> float:
    """The day's level around 1 (sd `day_noise`): a pure function of the seed and the date, wherever a series starts."""
    if not profile.day_noise:
        return 1.0
    return max(0.5, random.Random(f"{seed}:{day.isoformat()}").gauss(1.0, profile.day_noise))


def _ramp(minute: float, start: float, end: float, ramp: float) -> float:
    """0 outside [start - ramp, end + ramp], 1 inside [start, end], a cosine edge between."""
    if start <= minute <= end:
        return 1.0
    distance = start - minute if minute < start else minute - end
    if ramp <= 0 or distance >= ramp:
        return 0.0
    return 0.5 * (1 + math.cos(math.pi * distance / ramp))


def _day_shape(minute: float, night_factor: float) -> float:
    """The daily curve without peaks: the night level from 01:00 to 06:00, the day level from 09:00 to 23:00."""
    day = max(_ramp(minute, 9 * 60, 23 * 60, 180), _ramp(minute - 1440, 9 * 60, 23 * 60, 180))
    return night_factor + (1 - night_factor) * day


class _Compiled:
    """A profile with its clock times parsed once (a month of minutes is ~40,000 evaluations)."""

    def __init__(self, profile: TrafficProfile) -> None:
        self.profile = profile
        self.moves = sorted(m.on for m in profile.moves)
        spike = profile.spike
        self.spike = None if spike is None else (spike.at.timestamp(), spike.minutes * 60, spike.height)
        self._daily: dict[tuple[float, bool, int], float] = {}

    def rate(self, moment: datetime) -> float:
        local = moment.astimezone(BEIJING)
        return self.rate_local(local.hour * 60 + local.minute + local.second / 60, local.date(), moment.timestamp())

    def rate_local(self, minute: float, day: date, epoch: float) -> float:
        weekend = day.weekday() >= 5
        level = self.profile.day_rps * (self.profile.weekend_factor if weekend else 1.0)
        key = (minute, weekend, sum(1 for on in self.moves if on <= day))
        rate = self._daily.get(key)
        if rate is None:  # the same minute of every day of a kind (weekday or not, same peaks) has the same rate
            rate = level * _day_shape(minute, self.profile.night_factor)
            for peak in peaks_on(self.profile, day):
                start, end = _minute_of_day(peak.start), _minute_of_day(peak.end)
                rate += level * (peak.height - 1) * _ramp(minute, start, end, peak.ramp_minutes)
            self._daily[key] = rate
        if self.spike is not None and 0 <= epoch - self.spike[0] < self.spike[1]:
            rate = max(rate, level * self.spike[2])
        return max(rate, 0.0)


def rate_at(profile: TrafficProfile, moment: datetime) -> float:
    """The noiseless request rate (requests/s) at `moment` (timezone-aware)."""
    return _Compiled(profile).rate(moment)


def requests_per_second(
    profile: TrafficProfile, start: datetime, minutes: int, step_seconds: int = 60, seed: int = 0
) -> list[float]:
    """`minutes` of rates from `start`, one value per `step_seconds`, with the profile's noise (seeded)."""
    if start.tzinfo is None:
        raise ValueError("start must carry a timezone")
    compiled = _Compiled(profile)
    rng = random.Random(seed)
    local = start.astimezone(BEIJING)
    first_epoch = start.timestamp()
    first_minute = local.hour * 60 + local.minute + local.second / 60
    levels: dict[date, float] = {}
    values = []
    for index in range(minutes * 60 // step_seconds):
        elapsed = index * step_seconds / 60  # Beijing has no daylight saving: minutes of the day advance evenly
        days, minute = divmod(first_minute + elapsed, 1440)
        day = local.date() + timedelta(days=int(days))
        rate = compiled.rate_local(minute, day, first_epoch + index * step_seconds)
        if profile.day_noise:
            if day not in levels:
                levels[day] = day_level(profile, day, seed)
            rate *= levels[day]
        if profile.noise:
            rate *= max(0.0, rng.gauss(1.0, profile.noise))
        values.append(rate)
    return values


GUIDE_LUNCH = Peak(start="11:00", end="13:00", height=3.0)

# The profiles the issue names; "lunch-and-evening" is the end-to-end scenario's (11:30-13:30 and 19:00-21:00).
PRESETS: dict[str, TrafficProfile] = {
    "guide-lunch": TrafficProfile(peaks=[GUIDE_LUNCH]),
    "shifted-lunch": TrafficProfile(peaks=[Peak(start="11:30", end="13:30", height=3.0)]),
    "lunch-and-evening": TrafficProfile(
        peaks=[Peak(start="11:30", end="13:30", height=3.0), Peak(start="19:00", end="21:00", height=2.5)]
    ),
    "quiet-weekends": TrafficProfile(
        peaks=[GUIDE_LUNCH.model_copy(update={"weekdays_only": True})], weekend_factor=0.4
    ),
}


def with_spike(profile: TrafficProfile, at: datetime, minutes: int = 60, height: float = 4.0) -> TrafficProfile:
    """The same profile with one unforecastable spike."""
    return profile.model_copy(update={"spike": Spike(at=at, minutes=minutes, height=height)})
