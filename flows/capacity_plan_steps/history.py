"""A tier's past, read through Cloud Monitor: its load (the CLB listener's new connections per second) in
5-minute slots, and one server's capacity measured from the same weeks.

The load is read at the tier's CLB listener (`ClientNewConn`, QCE/LB_PUBLIC or, with the VPC, QCE/LB_PRIVATE):
every request of the tier passes there whichever servers served it, also servers long gone, which a per-server
metric would lose. One server's capacity is measured, not typed: for each slot where the tier's servers report
`CPUUsage`, their mean CPU against their share of the load (load / servers reporting); a least-squares line
CPU = idle + slope x share gives the share at the target CPU, (target - idle) / slope.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import BaseModel

from flows.capacity_plan_steps.forecast import SLOT_MINUTES, Day, by_day
from tasks import monitor

LOAD_METRIC = "ClientNewConn"
CPU_METRIC = "CPUUsage"
PERIOD = SLOT_MINUTES * 60


class PlanInputError(ValueError):
    """History that cannot give a plan; the message names what is missing and the fix."""


class Capacity(BaseModel):
    """One server's load at the target CPU, and how it was found."""

    per_server: float
    idle_cpu: float | None = None
    cpu_per_connection: float | None = None
    samples: int = 0
    how: str


def slot_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) - timedelta(minutes=moment.minute % SLOT_MINUTES)


def read_load(
    region: str, vip: str, vpc_id: str | None, port: int, start: datetime, end: datetime
) -> list[tuple[float, float]]:
    """(epoch seconds, new connections/s) of the listener for each 5-minute slot in [start, end]."""
    namespace = "QCE/LB_PRIVATE" if vpc_id else "QCE/LB_PUBLIC"
    dims = monitor.balancer_dimensions(vip, vpc_id, port)
    series = monitor.read_metric(namespace, LOAD_METRIC, [dims], start, end, PERIOD, region)
    return list(zip(series[0].timestamps, series[0].values, strict=True)) if series else []


def load_days(points: list[tuple[float, float]], start: datetime) -> dict[date, Day]:
    """The points on the 5-minute grid from `start`, cut into Beijing days (missing slots None)."""
    first = slot_floor(start).timestamp()
    index = {int((t - first) // PERIOD): v for t, v in points if t >= first}
    if not index:
        return {}
    values: list[float | None] = [index.get(i) for i in range(max(index) + 1)]
    return by_day(datetime.fromtimestamp(first, start.tzinfo), values)


def measure_capacity(
    region: str,
    instance_ids: list[str],
    load: list[tuple[float, float]],
    start: datetime,
    end: datetime,
    target_cpu: float,
) -> Capacity:
    """One server's new connections/s at `target_cpu`, from the servers' CPUUsage against their share of the load."""
    if not instance_ids:
        raise PlanInputError("the tier has no server in service to measure one server's capacity on")
    dims = [monitor.server_dimensions(i) for i in instance_ids]
    cpu: dict[float, list[float]] = {}
    for series in monitor.read_metric("QCE/CVM", CPU_METRIC, dims, start, end, PERIOD, region):
        for t, v in zip(series.timestamps, series.values, strict=True):
            cpu.setdefault(t, []).append(v)
    pairs = [(rate / len(cpu[t]), sum(cpu[t]) / len(cpu[t])) for t, rate in load if t in cpu and rate > 0]
    if len(pairs) < 12:
        raise PlanInputError(
            f"{len(pairs)} slots where both the CLB's {LOAD_METRIC} and the servers' {CPU_METRIC} are known: "
            "too few to measure one server's capacity; give connections_per_server"
        )
    n = len(pairs)
    mean_x = sum(x for x, _ in pairs) / n
    mean_y = sum(y for _, y in pairs) / n
    spread = sum((x - mean_x) ** 2 for x, _ in pairs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in pairs) / spread if spread else 0.0
    if slope <= 0:
        raise PlanInputError(
            f"the servers' {CPU_METRIC} does not rise with their share of {LOAD_METRIC} over these weeks: "
            "one server's capacity cannot be measured; give connections_per_server"
        )
    idle = mean_y - slope * mean_x
    per_server = (target_cpu - idle) / slope
    if per_server <= 0:
        raise PlanInputError(
            f"idle servers already use {idle:.0f} % CPU, above the {target_cpu:.0f} % target: raise target_cpu"
        )
    return Capacity(
        per_server=round(per_server, 2),
        idle_cpu=round(idle, 2),
        cpu_per_connection=round(slope, 4),
        samples=n,
        how=f"measured: CPU = {idle:.1f} % + {slope:.3f} % per connection/s of one server, over {n} slots",
    )
