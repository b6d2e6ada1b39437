"""The 5-field cron of scheduled actions (`Recurrence`), evaluated in Beijing time.

Fields: minute hour day-of-month month day-of-week, each `*`, a number, a range `a-b`, a step `*/n` or
`a-b/n`, or a comma list of those. Day of week 1-7 is Monday to Sunday (0 is Sunday too). As in cron,
when both day fields are restricted a day matching either one fires.
"""

from datetime import UTC, datetime, timedelta, timezone

from sandbox.core.errors import ApiError

BEIJING = timezone(timedelta(hours=8))
RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
SEARCH_DAYS = 366 * 5


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first, last = (int(x) for x in base.split("-", 1))
        else:
            first = last = int(base)
        if not (low <= first <= last <= high) or step < 1:
            raise ValueError(part)
        values.update(range(first, last + 1, step))
    return values


class Cron:
    def __init__(self, expression: str) -> None:
        fields = expression.split()
        try:
            if len(fields) != 5 or any(not set(f) <= set("0123456789*,-/") for f in fields):
                raise ValueError(expression)
            self.minutes, self.hours, self.days, self.months, weekdays = (
                _field(f, lo, hi) for f, (lo, hi) in zip(fields, RANGES, strict=True)
            )
        except ValueError:
            raise ApiError(
                "InvalidParameterValue.CronExpressionIllegal",
                f"The Recurrence `{expression}` is not a 5-field cron expression (minute hour day month weekday).",
            ) from None
        self.weekdays = {7 if d == 0 else d for d in weekdays}  # ISO: Monday 1 .. Sunday 7
        self.any_day, self.any_weekday = fields[2] == "*", fields[4] == "*"

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        by_date, by_weekday = day.day in self.days, day.isoweekday() in self.weekdays
        if self.any_day or self.any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday

    def next_after(self, moment: float) -> float | None:
        """The first firing strictly after `moment` (epoch seconds), None within five years."""
        start = datetime.fromtimestamp(moment, BEIJING).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(SEARCH_DAYS):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate.timestamp()
            day += timedelta(days=1)
        return None


def parse_beijing(member: str, text: str) -> float:
    """`2026-12-01T11:00:00+08:00` -> epoch seconds (the API takes Beijing time, with its offset)."""
    try:
        if len(text) != 25 or text[10] != "T" or not text.endswith("+08:00"):
            raise ValueError(text)
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ApiError(
            "InvalidParameterValue.TimeFormat", f"`{member}` `{text}` is not in the format YYYY-MM-DDThh:mm:ss+08:00."
        ) from None


def beijing(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).astimezone(BEIJING).isoformat(timespec="seconds")
