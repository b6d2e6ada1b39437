"""A tier's load for the next day, per 5-minute slot, from 14-28 days of its history (Beijing time).

Pure functions over plain lists: `plan-capacity` feeds them the series it read through Cloud Monitor, the replay
benchmark feeds them generated traffic. The method (`daytype_peak`, the default) was chosen by measurement
(`bench/forecast_methods.py`, docs/capacity-planning.md): for each slot, the higher of

- a high quantile (0.9) of that slot over the past days of the same type (weekdays, or Saturdays and Sundays), and
- the mean of that slot over the last two days of the same type (a peak that moved this week is followed at once,
  where a quantile over four weeks takes weeks to notice).

Measured over the last 28 of 56 generated days of six profiles, each slot's forecast turned into servers at the
70 % CPU target: slots under capacity seasonal naive (the slot a week ago) 71, median of the same weekday 96, the
quantile alone 39, this method 24 (12 of them the day a peak moved, 12 the unforecastable spike), for 2.8 % more
server-hours than seasonal naive. An under-forecast slot is an under-capacity slot; an over-forecast one costs part
of a server. No forecasting library: a few sorted lists per slot, 28 days x 288 slots.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Literal

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
SLOT_MINUTES = 5
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
MIN_DAYS = 14
MAX_DAYS = 28

Method = Literal["seasonal-naive", "weekday-median", "daytype-quantile", "daytype-peak"]
Day = list[float | None]  # one value per slot, None where the history has no sample


class ForecastError(ValueError):
    """Too little history to forecast from; the message says how much there is and what to do."""


def day_type(day: date) -> str:
    return "weekend" if day.isoweekday() >= 6 else "weekday"


def slot_start(day: date, slot: int) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=BEIJING) + timedelta(minutes=slot * SLOT_MINUTES)


def by_day(start: datetime, values: Sequence[float | None]) -> dict[date, Day]:
    """A series of 5-minute slots from `start` (any offset) cut into Beijing days; a slot with no value is None."""
    first = start.astimezone(BEIJING)
    days: dict[date, Day] = {}
    for index, value in enumerate(values):
        moment = first + timedelta(minutes=index * SLOT_MINUTES)
        slot = (moment.hour * 60 + moment.minute) // SLOT_MINUTES
        days.setdefault(moment.date(), [None] * SLOTS_PER_DAY)[slot] = value
    return days


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _slot_values(days: list[Day], slot: int, spread: int = 0) -> list[float]:
    """The slot's values over `days`; with `spread`, each day's widest value over slot +- spread."""
    found = []
    for values in days:
        near = [values[s] for s in range(max(0, slot - spread), min(SLOTS_PER_DAY, slot + spread + 1))]
        known = [v for v in near if v is not None]
        if known:
            found.append(max(known))
    return found


def _fill(forecast: list[float | None], fallback: float) -> list[float]:
    return [fallback if v is None else v for v in forecast]


def seasonal_naive(past: dict[date, Day], day: date) -> list[float]:
    """The same slot one week earlier."""
    week_ago = past.get(day - timedelta(days=7)) or [None] * SLOTS_PER_DAY
    return _fill(week_ago, _highest(past))


def weekday_median(past: dict[date, Day], day: date) -> list[float]:
    """The median of the slot over the same weekday of the past weeks."""
    same = [v for d, v in past.items() if d.isoweekday() == day.isoweekday()]
    return [_median_or(_slot_values(same, s), _highest(past)) for s in range(SLOTS_PER_DAY)]


def daytype_quantile(past: dict[date, Day], day: date, q: float = 0.9, spread: int = 0) -> list[float]:
    """A high quantile of the slot (widest over +- spread slots) over the past days of the same type."""
    same = _same_type(past, day)
    fallback = _highest(past)
    return [_quantile(found, q) if (found := _slot_values(same, s, spread)) else fallback for s in range(SLOTS_PER_DAY)]


def daytype_peak(past: dict[date, Day], day: date, q: float = 0.9, spread: int = 0, recent: int = 2) -> list[float]:
    """`daytype_quantile`, raised to the mean of the last `recent` days of the same type where they are higher."""
    base = daytype_quantile(past, day, q, spread)
    last = sorted(_same_type(past, day, keyed=True))[-recent:]
    latest = [past[d] for d in last]
    out = []
    for s in range(SLOTS_PER_DAY):
        found = _slot_values(latest, s, spread)
        out.append(max(base[s], sum(found) / len(found)) if found else base[s])
    return out


METHODS: dict[str, Callable[[dict[date, Day], date], list[float]]] = {
    "seasonal-naive": seasonal_naive,
    "weekday-median": weekday_median,
    "daytype-quantile": daytype_quantile,
    "daytype-peak": daytype_peak,
}


def _same_type(past: dict[date, Day], day: date, keyed: bool = False) -> list:  # type: ignore[type-arg]
    kind = day_type(day)
    chosen = sorted(d for d in past if day_type(d) == kind) or sorted(past)  # no such day yet: all days
    return chosen if keyed else [past[d] for d in chosen]


def _median_or(values: list[float], fallback: float) -> float:
    return _quantile(values, 0.5) if values else fallback


def _highest(past: dict[date, Day]) -> float:
    return max((v for values in past.values() for v in values if v is not None), default=0.0)


def usable_days(past: dict[date, Day], before: date) -> dict[date, Day]:
    """The last MAX_DAYS whole days before `before` that have data (a day at least half sampled)."""
    kept = {
        d: v
        for d, v in past.items()
        if d < before and sum(x is not None for x in v) >= SLOTS_PER_DAY // 2 and (before - d).days <= MAX_DAYS
    }
    return kept


def forecast_day(past: dict[date, Day], day: date, method: Method = "daytype-peak") -> list[float]:
    """The load of each 5-minute slot of `day` (Beijing time), from the MIN_DAYS..MAX_DAYS days before it."""
    history = usable_days(past, day)
    if len(history) < MIN_DAYS:
        raise ForecastError(
            f"{len(history)} day(s) of history before {day} (at least {MIN_DAYS} needed, each at least half "
            "sampled): wait until the monitor holds two weeks, or plan by hand with the fixed lunch peak"
        )
    return METHODS[method](history, day)
