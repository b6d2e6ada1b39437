"""A tier's capacity in time, as the flows saw it: desired, in service, healthy behind the CLB, and what drove it.

The Auto Scaling flows record a sample each time they read the scaling group or the CLB's target health (the polls
they make anyway while they wait), and a driver for each change: their own, or an activity whose cause names a
scheduled action or an alarm. The tier's CPU comes from Cloud Monitor: `read_cpu` reads, once per report, the
CPUUsage of the servers seen behind the CLB over the chart's range (one `read_metric`, period 60) and draws their
mean per minute; a failed read draws no CPU line and says so. `CapacityTimeline.markdown()` draws it as one SVG
image in a `data:` URL, which the Prefect UI's markdown artifacts show (its renderer allows `data:image/*` in
`img src`; a raw `<svg>` is sanitized away), so the chart is inside the run's report, with no file or server of
its own.
"""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from xml.sax.saxutils import escape

from pydantic import BaseModel, Field

from tasks.autoscaling_models import Activity, Group
from tasks.clb import Target
from tasks.monitor import read_metric, server_dimensions

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")  # the time of Tencent's schedules and console
SERIES = (  # field, legend, colour, dash, width: in service under, desired dashed, healthy dotted on top
    ("in_service", "in service", "#2ca02c", "", 4.0),
    ("desired", "desired", "#1f77b4", "7 4", 2.0),
    ("healthy", "healthy behind the CLB", "#ff7f0e", "2 3", 2.5),
)
METRIC_COLOUR = "#9467bd"
# "CPU_UTILIZATION average 90.0 GREATER_THAN 70" (an alarm) or "CPU_UTILIZATION average 85.0, target 60" (tracking)
_METRIC = re.compile(r"\b([A-Z]+(?:_[A-Z]+)+) (?:average|maximum|minimum) ([\d.]+),? (?:[A-Z_]+ |target )([\d.]+)")
_NAMED = re.compile(r"(scheduled action|scaling policy|target tracking policy) (\S+)")
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 330, 48, 60, 56, 62


def now() -> datetime:
    return datetime.now(UTC)


class CapacitySample(BaseModel):
    at: datetime
    desired: int | None = None
    in_service: int | None = None
    healthy: int | None = None


class Driver(BaseModel):
    at: datetime
    label: str
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None


def driver_of(activity: Activity, at: datetime) -> Driver | None:
    """What an activity's cause says drove it: a scheduled action or an alarm (with its metric), else None (a user's
    change, which the flow that made it records itself)."""
    named = _NAMED.search(activity.cause)
    if named is None:
        return None
    metric = _METRIC.search(activity.cause)
    if metric is None:
        kind = "schedule" if named.group(1) == "scheduled action" else "policy"
        return Driver(at=at, label=f"{kind} {named.group(2)}")
    name, value, threshold = metric.group(1), float(metric.group(2)), float(metric.group(3))
    short = name.removesuffix("_UTILIZATION").replace("_", " ")
    return Driver(
        at=at, label=f"{short} {value:g} (limit {threshold:g})", metric=name, value=value, threshold=threshold
    )


class CapacityTimeline(BaseModel):
    """The samples of one tier, kept only where a value changed (and when it was last seen, to draw up to it)."""

    title: str = ""
    samples: list[CapacitySample] = Field(default_factory=list)
    drivers: list[Driver] = Field(default_factory=list)
    until: datetime | None = None
    seen_activities: set[str] = Field(default_factory=set)
    servers: set[str] = Field(default_factory=set, description="the tier's servers seen behind its CLB")
    cpu: list[tuple[datetime, float]] = Field(default_factory=list, description="their mean CPUUsage per minute")
    cpu_note: str = ""

    def observe(
        self,
        desired: int | None = None,
        in_service: int | None = None,
        healthy: int | None = None,
        at: datetime | None = None,
    ) -> None:
        """One observation; a value left None keeps what was seen last."""
        at = at or now()
        last = self.samples[-1] if self.samples else CapacitySample(at=at)
        sample = CapacitySample(
            at=at,
            desired=last.desired if desired is None else desired,
            in_service=last.in_service if in_service is None else in_service,
            healthy=last.healthy if healthy is None else healthy,
        )
        if not self.samples or sample.model_dump(exclude={"at"}) != last.model_dump(exclude={"at"}):
            self.samples.append(sample)
        self.until = at

    def observe_group(self, group: Group | None, at: datetime | None = None) -> None:
        if group is not None:
            self.observe(desired=group.desired, in_service=group.in_service, at=at)

    def observe_health(self, health: dict[Target, bool], port: int, at: datetime | None = None) -> None:
        """A DescribeTargetHealth answer of the tier's listener: the healthy servers on the tier's backend port."""
        self.servers |= {target.instance_id for target in health if target.port == port}
        self.observe(healthy=sum(ok for target, ok in health.items() if target.port == port), at=at)

    def observe_activities(self, activities: list[Activity], at: datetime | None = None) -> None:
        """A driver for each activity not seen before whose cause names a schedule or an alarm."""
        for activity in activities:
            if activity.activity_id in self.seen_activities:
                continue
            self.seen_activities.add(activity.activity_id)
            driver = driver_of(activity, at or now())
            if driver is not None:
                self.drivers.append(driver)

    def drove(self, label: str, at: datetime | None = None) -> None:
        self.drivers.append(Driver(at=at or now(), label=label))

    def read_cpu(self, region: str | None = None) -> None:
        """The servers' mean CPUUsage over the chart's range from Cloud Monitor (one read; never raises: a failed
        read leaves no CPU line and a note saying why)."""
        if not self.samples or not self.servers:
            self.cpu, self.cpu_note = [], "No CPU line: no server was seen behind the CLB."
            return
        start = self.samples[0].at.replace(second=0, microsecond=0)
        end = max(self.until or start, start)
        instances = [server_dimensions(i) for i in sorted(self.servers)]
        try:
            series = read_metric("QCE/CVM", "CPUUsage", instances, start, end, period=60, region=region)
        except Exception as error:  # the chart is an aid: the run's outcome never depends on it
            self.cpu = []
            self.cpu_note = f"No CPU line: Cloud Monitor could not be read ({type(error).__name__}: {error})."[:300]
            return
        by_minute: dict[float, list[float]] = {}
        for one in series:
            for stamp, value in zip(one.timestamps, one.values, strict=True):
                by_minute.setdefault(stamp, []).append(value)
        self.cpu = [(datetime.fromtimestamp(t, UTC), sum(v) / len(v)) for t, v in sorted(by_minute.items())]
        self.cpu_note = (
            f"CPU: the mean CPUUsage of {len(self.servers)} server(s) from Cloud Monitor, per minute."
            if self.cpu
            else "No CPU line: Cloud Monitor has no CPUUsage points for these servers in this range."
        )

    def markdown(self) -> list[str]:
        """The chart as a markdown image (a data: URL), with a line of text for those who cannot see it."""
        if not self.samples:
            return []
        svg = self.svg().encode()
        alt = f"{self.title}: {self.summary()}".replace("]", ")").replace("[", "(")
        image = f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg).decode()})"
        return [image, "", self.summary(), *(["", self.cpu_note] if self.cpu_note else [])]

    def summary(self) -> str:
        parts = []
        for field, legend, *_ in sorted(SERIES, key=lambda series: series[0] != "desired"):
            values = [v for v in (getattr(s, field) for s in self.samples) if v is not None]
            changes = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
            if changes:
                parts.append(f"{legend} {' → '.join(map(str, changes))}")
        return "; ".join(parts) + "."

    def svg(self) -> str:
        return _Drawing(self).render()


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}"{extra}/>'


class _Drawing:
    def __init__(self, timeline: CapacityTimeline) -> None:
        self.t = timeline
        times = [s.at for s in timeline.samples] + [d.at for d in timeline.drivers]
        self.start = min(times)
        self.end = max([*times, timeline.until or self.start])
        if self.end <= self.start:
            self.end = self.start + timedelta(seconds=1)
        values = [v for s in timeline.samples for v in (s.desired, s.in_service, s.healthy) if v is not None]
        self.top = max([*values, 1]) + 1
        self.thresholds = sorted({d.threshold for d in timeline.drivers if d.threshold is not None})

    def x(self, at: datetime) -> float:
        share = (at - self.start).total_seconds() / (self.end - self.start).total_seconds()
        return LEFT + share * (W - LEFT - RIGHT)

    def y(self, servers: float) -> float:
        return H - BOTTOM - servers / self.top * (H - TOP - BOTTOM)

    def y_percent(self, percent: float) -> float:
        return H - BOTTOM - min(percent, 100.0) / 100.0 * (H - TOP - BOTTOM)

    def render(self) -> str:
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            'font-family="Helvetica, Arial, sans-serif" font-size="11">',
            f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
            f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{escape(self.t.title)}</text>',
        ]
        out += self.axes() + self.driver_marks() + self.lines() + self.cpu_line() + self.legend()
        return "\n".join([*out, "</svg>"])

    def axes(self) -> list[str]:
        x0, x1, y0 = LEFT, W - RIGHT, H - BOTTOM
        out = [_line(x0, y0, x1, y0, "#333")]
        step = max(1, math.ceil(self.top / 8))
        for n in range(0, self.top + 1, step):
            y = self.y(n)
            out.append(_line(x0, y, x1, y, "#e5e5e5"))
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{n}</text>')
        out.append(f'<text x="12" y="{TOP - 8}" fill="#555">servers</text>')
        span = (self.end - self.start).total_seconds()
        nice = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
        tick = next((s for s in nice if span / s <= 8), nice[-1])
        first = math.ceil(self.start.timestamp() / tick) * tick
        pattern = "%H:%M:%S" if tick < 60 else "%H:%M"
        for stamp in range(int(first), int(self.end.timestamp()) + 1, tick):
            at = datetime.fromtimestamp(stamp, UTC)
            x = self.x(at)
            out.append(_line(x, y0, x, y0 + 4, "#333"))
            label = at.astimezone(BEIJING).strftime(pattern)
            out.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">{label}</text>')
        out.append(f'<text x="{x1}" y="{y0 + 30}" text-anchor="end" fill="#555">Beijing time</text>')
        return out

    def lines(self) -> list[str]:
        out = []
        for offset, (field, _, colour, dash, width) in zip((0.0, -1.5, 1.5), SERIES, strict=True):
            points: list[tuple[float, float]] = []
            for sample in self.t.samples:
                value = getattr(sample, field)
                if value is None:
                    continue
                x, y = self.x(sample.at), self.y(value) + offset
                if points:
                    points.append((x, points[-1][1]))  # a step: capacity holds until it changes
                points.append((x, y))
            if not points:
                continue
            points.append((self.x(self.t.until or self.end), points[-1][1]))
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width}"{dashes}/>')
        return out

    def driver_marks(self) -> list[str]:
        out = []
        for i, driver in enumerate(self.t.drivers):
            x = self.x(driver.at)
            y = TOP - 24 + 11 * (i % 3)  # three rows, so labels of close drivers do not overprint
            label = driver.label if len(driver.label) <= 48 else driver.label[:47] + "…"
            anchor = "end" if x > W / 2 else "start"
            out.append(_line(x, y + 2, x, H - BOTTOM, "#999", ' stroke-dasharray="1 3"'))
            shift = -3 if anchor == "end" else 3
            out.append(f'<text x="{x + shift:.1f}" y="{y}" text-anchor="{anchor}" fill="#444">{escape(label)}</text>')
        return out

    def cpu_line(self) -> list[str]:
        """The mean CPU on a percent axis at the right, with the alarms' thresholds dashed."""
        if not self.t.cpu and not self.thresholds:
            return []
        x1 = W - RIGHT
        out = [f'<text x="{x1 + 6}" y="{TOP - 8}" fill="{METRIC_COLOUR}">CPU %</text>']
        for n in (0, 50, 100):
            out.append(f'<text x="{x1 + 6}" y="{self.y_percent(n) + 4:.1f}" fill="{METRIC_COLOUR}">{n}</text>')
        for threshold in self.thresholds:
            y = self.y_percent(threshold)
            out.append(_line(LEFT, y, x1, y, METRIC_COLOUR, ' stroke-dasharray="4 4"'))
        inside = [(at, v) for at, v in self.t.cpu if self.start <= at <= self.end] or self.t.cpu[-1:]
        if len(inside) == 1:
            at, value = inside[0]
            out.append(f'<circle cx="{self.x(at):.1f}" cy="{self.y_percent(value):.1f}" r="3" fill="{METRIC_COLOUR}"/>')
        elif inside:
            path = " ".join(f"{self.x(at):.1f},{self.y_percent(v):.1f}" for at, v in inside)
            out.append(f'<polyline points="{path}" fill="none" stroke="{METRIC_COLOUR}" stroke-width="1.5"/>')
        return out

    def legend(self) -> list[str]:
        out, x, y = [], float(LEFT), H - 14
        entries = [(legend, colour, dash) for _, legend, colour, dash, _ in SERIES]
        if self.t.cpu:
            entries.append(("mean CPU (Cloud Monitor)", METRIC_COLOUR, ""))
        elif self.thresholds:
            entries.append(("CPU alarm threshold", METRIC_COLOUR, "4 4"))
        for legend, colour, dash in entries:
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(_line(x, y - 4, x + 22, y - 4, colour, f' stroke-width="3"{dashes}'))
            out.append(f'<text x="{x + 27:.1f}" y="{y}">{escape(legend)}</text>')
            x += 40 + 6.2 * len(legend)
        return out
