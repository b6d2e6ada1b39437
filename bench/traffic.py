"""Generated mini-program traffic for the capacity benches: requests per second, one value per minute, Beijing time.

A day: a quiet night, a morning rise to the daytime level, the profile's peaks (each a plateau reached over
`ramp` minutes from its start), an evening fall; weekends at `weekend` times the weekday level; each day's level
drawn around 1 (sd `day_noise`) and each minute's around that (sd `noise`); optionally a peak that moves on a given
day (a campaign), and one spike no history announces. Seeded: the same profile and seed give the same traffic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

MINUTES_PER_DAY = 24 * 60


def minute_of(hhmm: str) -> int:
    hour, minute = hhmm.split(":")
    return int(hour) * 60 + int(minute)


@dataclass(frozen=True)
class Peak:
    start: str
    end: str
    height: float  # requests/s added at the plateau
    ramp: int = 10  # minutes from the start to the plateau
    weekdays_only: bool = False


@dataclass(frozen=True)
class Spike:
    day: int  # index of the day in the generated range
    start: str
    minutes: int
    height: float


@dataclass(frozen=True)
class Profile:
    name: str
    peaks: tuple[Peak, ...]
    night: float = 4.0  # requests/s, 01:00-06:00
    day: float = 18.0  # requests/s, 09:00-22:00 outside the peaks
    weekend: float = 1.0  # weekend level x this (peaks included)
    noise: float = 0.10
    day_noise: float = 0.05
    spike: Spike | None = None
    moved: tuple[int, tuple[Peak, ...]] | None = None  # from this day index on, these peaks instead
    first_day: date = field(default_factory=lambda: date(2026, 11, 2))  # a Monday

    def peaks_on(self, index: int) -> tuple[Peak, ...]:
        if self.moved is not None and index >= self.moved[0]:
            return self.moved[1]
        return self.peaks


def _base(minute: int, night: float, day: float) -> float:
    """The daily shape without peaks: night, a rise 06:00-09:00, day, a fall 22:00-01:00."""
    hour = minute / 60
    if 1 <= hour < 6:
        return night
    if 6 <= hour < 9:
        return night + (day - night) * (hour - 6) / 3
    if 9 <= hour < 22:
        return day
    fall = (hour - 22) if hour >= 22 else hour + 2  # 22:00 -> 01:00
    return day - (day - night) * fall / 3


def _peak(minute: int, peak: Peak) -> float:
    start, end = minute_of(peak.start), minute_of(peak.end)
    if not start <= minute < end:
        return 0.0
    return peak.height * min(1.0, (minute - start + 1) / max(peak.ramp, 1))


def generate(profile: Profile, days: int, seed: int = 1) -> list[float]:
    """Requests/s for each minute of `days` days from `profile.first_day` 00:00 Beijing time."""
    rng = random.Random(f"{profile.name}:{seed}")
    out: list[float] = []
    for index in range(days):
        today = profile.first_day + timedelta(days=index)
        weekend = today.isoweekday() >= 6
        level = max(0.5, rng.gauss(1.0, profile.day_noise)) * (profile.weekend if weekend else 1.0)
        peaks = [p for p in profile.peaks_on(index) if not (weekend and p.weekdays_only)]
        for minute in range(MINUTES_PER_DAY):
            load = _base(minute, profile.night, profile.day) + sum(_peak(minute, p) for p in peaks)
            spike = profile.spike
            if spike is not None and spike.day == index:
                at = minute_of(spike.start)
                if at <= minute < at + spike.minutes:
                    load += spike.height
            out.append(max(0.0, load * level * max(0.2, rng.gauss(1.0, profile.noise))))
    return out


def slots(per_minute: list[float], minutes: int = 5) -> list[float]:
    """The mean of each `minutes`-long slot (what Cloud Monitor's 300 s period reports)."""
    return [sum(per_minute[i : i + minutes]) / minutes for i in range(0, len(per_minute), minutes)]


LUNCH = Peak("11:00", "13:00", 26.0)
SHIFTED = Peak("11:30", "13:30", 26.0)
EVENING = Peak("19:00", "21:00", 22.0)

# The benches' profiles. The guide's: a lunch peak 11:00-13:00 that its +2 servers carry (2 servers by day, 4 at the
# peak, each at most ~70 % CPU at 20 requests/s per server at 100 %).
PROFILES = (
    Profile("guide lunch peak", (LUNCH,)),
    Profile("shifted peak 11:30-13:30", (SHIFTED,)),
    Profile("lunch + evening peak", (SHIFTED, EVENING)),
    Profile("quiet weekends", (Peak("11:00", "13:00", 26.0, weekdays_only=True),), weekend=0.45),
    Profile("peak moves on day 42", (LUNCH,), moved=(42, (SHIFTED,))),
    Profile("unforecastable spike", (LUNCH,), spike=Spike(day=47, start="16:00", minutes=60, height=30.0)),
)
