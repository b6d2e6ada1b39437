"""Cloud Monitor 2018-07-24 actions: `GetMonitorData` and `DescribeBaseMetrics` (request in, answer out).

GetMonitorData's rules, as the API documents them: one namespace and one metric per call; each instance a set of
dimensions (CVM `InstanceId`; public CLB `vip` [+ `loadBalancerPort`, `protocol`]; private CLB `vip`, `vpcId`
[+ `loadBalancerPort`, `protocol`]); Period 60 (default 300) / 300 / 3600 / 86400; StartTime / EndTime in ISO 8601
with an offset (EndTime defaults to now, StartTime to the start of EndTime's day, Beijing time; EndTime before
StartTime is refused); at most 50 instances and 7,200 data points (instances x points) per request. Points are
period starts (epoch seconds), aligned in Beijing time, from StartTime to EndTime, each the period's maximum (or sum,
for the Acc traffic) of the minutes it holds; a period with no data, or older than the retention, has no point.
Dimension names that form no combination of the namespace give an empty series (the FAQ's "result is empty");
a CVM or CLB that does not exist answers `AuthFailure.UnauthorizedOperation`.
"""

from datetime import datetime
from typing import Any

from sandbox.core.errors import ApiError, invalid_value
from sandbox.core.registry import Request, action
from sandbox.core.traffic_profiles import BEIJING
from sandbox.monitor import catalog
from sandbox.monitor.backend import MonitorBackend, Source

VERSION = "2018-07-24"
_SPECIFY = {1: "AvgValues", 2: "MaxValues", 4: "MinValues"}


def monitor(req: Request) -> MonitorBackend:
    return req.cloud.backends["monitor"]  # type: ignore[return-value]


def _time(name: str, value: str) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_value(name, value, "use ISO 8601 with an offset, e.g. 2024-04-28T18:45:00+08:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=BEIJING)  # the console's and the examples' time zone
    return moment.timestamp()


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, BEIJING).isoformat()


def _align(moment: float, period: int) -> int:
    """The start of the period holding `moment`, in Beijing time (a day starts at 00:00 +08:00)."""
    offset = 8 * 3600
    return int((moment + offset) // period * period - offset)


def _metric(namespace: str, name: str) -> catalog.MetricSpec:
    if namespace not in catalog.METRICS:
        raise invalid_value("Namespace", namespace, f"supported: {', '.join(catalog.METRICS)}")
    spec = catalog.METRICS[namespace].get(name)
    if spec is None:
        raise invalid_value("MetricName", name, f"no such metric in {namespace}")
    return spec


@action("monitor", VERSION, "GetMonitorData")
def get_monitor_data(req: Request) -> dict[str, Any]:
    namespace, name = req.get("Namespace"), req.get("MetricName")
    spec = _metric(namespace, name)
    period = req.get("Period", 300)
    if period not in catalog.PERIODS:
        raise invalid_value("Period", period, f"{name} has periods {', '.join(map(str, catalog.PERIODS))}")
    instances = req.get("Instances") or []
    if not instances:
        raise invalid_value("Instances", "[]", "name at least one instance")
    if len(instances) > catalog.MAX_INSTANCES:
        raise ApiError("LimitExceeded", f"At most {catalog.MAX_INSTANCES} instances per request ({len(instances)}).")
    now = req.cloud.clock.now()
    end = _time("EndTime", req.get("EndTime")) if req.get("EndTime") else now
    start = _time("StartTime", req.get("StartTime")) if req.get("StartTime") else float(_align(end, 86400))
    if end < start:
        raise invalid_value("EndTime", req.get("EndTime"), "EndTime must not be earlier than StartTime")
    first, last = _align(start, period), _align(end, period)
    points = (last - first) // period + 1
    if points * len(instances) > catalog.MAX_POINTS:
        raise ApiError(
            "LimitExceeded",
            f"The request asks for {points * len(instances)} data points ({len(instances)} instances x {points}); "
            f"at most {catalog.MAX_POINTS}: shorten the range or lengthen the Period.",
        )
    oldest = now - catalog.retention(namespace, spec, period)
    statistics = req.get("SpecifyStatistics") or 0
    backend = monitor(req)
    data_points = []
    for instance in instances:
        dimensions = {d.get("Name", ""): str(d.get("Value", "")) for d in instance.get("Dimensions") or []}
        source = _source(backend, req.region, namespace, dimensions)
        series = _series(backend, source, spec, period, max(first, _align(oldest, period) + period), last, statistics)
        data_points.append({"Dimensions": instance.get("Dimensions") or [], **series})
    return {
        "Period": period,
        "MetricName": name,
        "DataPoints": data_points,
        "StartTime": _iso(start),
        "EndTime": _iso(end),
        "Msg": "",
    }


def _source(backend: MonitorBackend, region: str, namespace: str, dimensions: dict[str, str]) -> Source | None:
    if namespace == "QCE/CVM":
        if set(dimensions) != {"InstanceId"}:
            return None
        return backend.server_source(region, dimensions["InstanceId"])
    return backend.balancer_source(region, namespace, dimensions)


def _series(
    backend: MonitorBackend,
    source: Source | None,
    spec: catalog.MetricSpec,
    period: int,
    first: int,
    last: int,
    statistics: int,
) -> dict[str, list[float]]:
    timestamps: list[float] = []
    values: list[float] = []
    extra: dict[str, list[float]] = {field: [] for bit, field in _SPECIFY.items() if statistics & bit}
    if source is not None and first <= last:
        minutes = backend.minute_values(source, spec.name, first // 60, (last + period) // 60)
        step = period // 60
        for bucket in range(first, last + 1, period):
            held = [minutes[m] for m in range(bucket // 60, bucket // 60 + step) if m in minutes]
            if not held:
                continue
            timestamps.append(float(bucket))
            values.append(round(sum(held) if spec.statistic == "sum" else max(held), 3))
            for field, column in extra.items():
                pick = {"AvgValues": sum(held) / len(held), "MaxValues": max(held), "MinValues": min(held)}[field]
                column.append(round(pick, 3))
    return {"Timestamps": timestamps, "Values": values, **extra}


@action("monitor", VERSION, "DescribeBaseMetrics")
def describe_base_metrics(req: Request) -> dict[str, Any]:
    namespace = req.get("Namespace")
    wanted_name = req.get("MetricName")
    wanted_dimensions = set(req.get("Dimensions") or [])
    metric_set = []
    for spec in catalog.METRICS.get(namespace, {}).values():
        if wanted_name and spec.name != wanted_name:
            continue
        dimension_sets = catalog.DIMENSIONS[namespace]
        if wanted_dimensions and not any(wanted_dimensions <= set(d) for d in dimension_sets):
            continue
        stat = "sum" if spec.statistic == "sum" else "max"
        metric_set.append(
            {
                "Namespace": namespace,
                "MetricName": spec.name,
                "Unit": spec.unit,
                "UnitCname": spec.unit_cname,
                "Period": list(catalog.PERIODS),
                "Periods": [{"Period": str(p), "StatType": [stat]} for p in catalog.PERIODS],
                "Meaning": {"En": spec.meaning_en, "Zh": spec.cname},
                "Dimensions": [{"Dimensions": d} for d in dimension_sets],
                "MetricCName": spec.cname,
                "MetricEName": spec.meaning_en,
            }
        )
    return {"MetricSet": metric_set}
