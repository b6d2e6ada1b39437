"""Cloud Monitor: read a metric's series for servers or load balancers over a time range (`GetMonitorData`).

One `GetMonitorData` call reads one metric of a few instances over a bounded number of points. `read_metric`
pages a range of any length: instances in groups of MAX_INSTANCES_PER_CALL, time in windows so that each call
asks for at most MAX_POINTS_PER_CALL points (instances x points). Those are the limits Tencent's metric pages
have long documented (10 instances, 1,440 points per request); the API's current description (SDK 3.1.189)
allows 50 and 7,200, so these calls suit both. Retention bounds how far back a period reaches (1 min: 15 days,
31 for CVM CPU / network; 5 min: 31 days; 1 h: 93 days): older periods simply have no points.

    series = read_metric("QCE/LB_PUBLIC", "ClientNewConn", [balancer_dimensions(vip)], start, end, period=300)

Instances are dimension sets: `server_dimensions(instance_id)` for QCE/CVM, `balancer_dimensions(vip, vpc_id,
port, protocol)` for QCE/LB_PUBLIC (no vpc_id) and QCE/LB_PRIVATE (with it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.cloud import call_json, clients_for

MAX_INSTANCES_PER_CALL = 10
MAX_POINTS_PER_CALL = 1440
PERIODS = (60, 300, 3600, 86400)
BEIJING = timezone(timedelta(hours=8))


class MetricSeries(BaseModel):
    """One instance's series: period starts (epoch seconds) and their values, oldest first."""

    namespace: str
    metric: str
    period: int
    dimensions: dict[str, str]
    timestamps: list[float]
    values: list[float]

    def points(self) -> list[tuple[datetime, float]]:
        return [(datetime.fromtimestamp(t, UTC), v) for t, v in zip(self.timestamps, self.values, strict=True)]


def server_dimensions(instance_id: str) -> dict[str, str]:
    """A CVM's dimensions in QCE/CVM."""
    return {"InstanceId": instance_id}


def balancer_dimensions(
    vip: str, vpc_id: str | None = None, port: int | None = None, protocol: str = "tcp"
) -> dict[str, str]:
    """A CLB's dimensions (a listener's with `port`): QCE/LB_PUBLIC without `vpc_id`, QCE/LB_PRIVATE with it."""
    dimensions = {"vip": vip}
    if vpc_id:
        dimensions["vpcId"] = vpc_id
    if port is not None:
        dimensions |= {"loadBalancerPort": str(port), "protocol": protocol.lower()}
    return dimensions


def windows(start: datetime, end: datetime, period: int, instances: int) -> list[tuple[datetime, datetime]]:
    """[start, end] cut into ranges of at most MAX_POINTS_PER_CALL // instances points each (inclusive ends)."""
    per_call = max(1, MAX_POINTS_PER_CALL // max(1, instances))
    step = timedelta(seconds=period)
    cuts = []
    first = start
    while first <= end:
        last = min(end, first + step * (per_call - 1))
        cuts.append((first, last))
        first = last + step
    return cuts


def _check(
    namespace: str, metric: str, instances: list[dict[str, str]], start: datetime, end: datetime, period: int
) -> None:
    if period not in PERIODS:
        raise ValueError(f"{metric}: period must be one of {PERIODS} seconds, not {period}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"{metric}: give start and end with a timezone (e.g. datetime.now(UTC))")
    if end < start:
        raise ValueError(f"{metric}: the range ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    if not instances:
        raise ValueError(f"{namespace} {metric}: name at least one instance (its dimensions)")


def _read(region: str | None, request: dict[str, object]) -> dict[str, object]:
    return call_json(clients_for(region).monitor, "GetMonitorData", request)


def _matched(group: list[MetricSeries], data_points: list[dict]) -> list[tuple[MetricSeries, dict]]:
    """Each series with its answer, by dimensions (in the order asked when an answer does not echo them)."""
    by_dimensions = {frozenset((d["Name"], d["Value"]) for d in p.get("Dimensions") or []): p for p in data_points}
    pairs = []
    for index, one in enumerate(group):
        found = by_dimensions.get(frozenset(one.dimensions.items()))
        if found is None and index < len(data_points):
            found = data_points[index]
        if found is not None:
            pairs.append((one, found))
    return pairs


@task(cache_policy=NO_CACHE)
def read_metric(
    namespace: str,
    metric: str,
    instances: list[dict[str, str]],
    start: datetime,
    end: datetime,
    period: int = 300,
    region: str | None = None,
) -> list[MetricSeries]:
    """`metric` of each instance over [start, end], one series per instance in the order given."""
    _check(namespace, metric, instances, start, end, period)
    series = [
        MetricSeries(namespace=namespace, metric=metric, period=period, dimensions=d, timestamps=[], values=[])
        for d in instances
    ]
    for offset in range(0, len(instances), MAX_INSTANCES_PER_CALL):
        group = series[offset : offset + MAX_INSTANCES_PER_CALL]
        for first, last in windows(start, end, period, len(group)):
            answer = _read(
                region,
                {
                    "Namespace": namespace,
                    "MetricName": metric,
                    "Period": period,
                    "StartTime": first.astimezone(BEIJING).isoformat(timespec="seconds"),
                    "EndTime": last.astimezone(BEIJING).isoformat(timespec="seconds"),
                    "Instances": [
                        {"Dimensions": [{"Name": k, "Value": v} for k, v in one.dimensions.items()]} for one in group
                    ],
                },
            )
            for one, points in _matched(group, answer.get("DataPoints") or []):
                seen = set(one.timestamps[-1:])  # windows meet at a period boundary: keep each point once
                for timestamp, value in zip(points.get("Timestamps") or [], points.get("Values") or [], strict=True):
                    if timestamp not in seen:
                        one.timestamps.append(timestamp)
                        one.values.append(value)
    return series
