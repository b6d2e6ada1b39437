"""Cloud Monitor (monitor 2018-07-24) state and rules: which series exist, and their one-minute values (no HTTP).

A series' source is a server (`("cvm", instance_id)`), a load balancer (`("lb", lb_id)`) or one of its listeners
(`("listener", lb_id, listener_id)`). Each minute of a source has a value from, in this order:

- the history loaded for it (`load_history`, from `POST /_sandbox/monitor/history`): a request rate per minute,
  turned into metrics by the same rules as live traffic;
- the live traffic it really served: a server's requests (`sandbox.core.metrics.ServerMetrics`, the samples
  Auto Scaling alarms read, pins included), a listener's forwarded connections and bytes (`clb.connection` and
  `clb.traffic` events from the data plane's forwarders), while the resource existed;
- nothing (no data point), e.g. before a server was launched.

Derivations (one minute, `r` requests or connections): CPUUsage = `cpu_percent(r, cores)` (50 ms of one core per
request), Lan*traffic and Client*traffic in Mbit/s from the bytes, ClientNewConn = r / 60 per second,
ClientConnum / ClientConcurConn = the most connections open at once, ClientAcc*traffic in MB. History has no
bytes: a request counts REQUEST_BYTES_IN / REQUEST_BYTES_OUT (a Wafer login's order of magnitude) and keeps a
connection open CONNECTION_SECONDS (Little's law gives the open connections). Live samples cover the last 2 days
(the clock can be advanced through a day); history lives in memory only (load it again after a restart).
"""

import weakref
from array import array
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from sandbox.core.backend import Backend, backend
from sandbox.core.catalog import INSTANCE_TYPES
from sandbox.core.errors import ApiError
from sandbox.core.metrics import MEM_BASELINE, cpu_percent, mbps

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud, Events

Source = tuple[str, ...]
REQUEST_BYTES_IN = 600
REQUEST_BYTES_OUT = 1500
CONNECTION_SECONDS = 0.2
KEEP_LIVE_MINUTES = 2 * 1440
MEGABYTE = 1024 * 1024
_SERVER_METRIC = {
    "CPUUsage": "CPU_UTILIZATION",
    "BaseCpuUsage": "CPU_UTILIZATION",
    "MemUsage": "MEM_UTILIZATION",
    "LanOuttraffic": "LAN_TRAFFIC_OUT",
    "LanIntraffic": "LAN_TRAFFIC_IN",
}
_SUBSCRIBED: "weakref.WeakSet[Events]" = weakref.WeakSet()


class InstanceLife(BaseModel):
    """When a server existed (its series have live points only then), and its cores."""

    start: float
    end: float | None = None
    cores: int = 1


class MonitorState(BaseModel):
    instances: dict[str, InstanceLife] = Field(default_factory=dict)


@dataclass
class RateHistory:
    """Loaded history of one source: requests/s per minute from `start_minute` (epoch seconds // 60)."""

    start_minute: int
    rates: array
    cores: int = 1

    def covers(self, minute: int) -> bool:
        return self.start_minute <= minute < self.start_minute + len(self.rates)


def _current(cloud: "Cloud") -> "MonitorBackend":
    return cloud.backends["monitor"]  # type: ignore[return-value]


def unknown_instance() -> ApiError:
    # the message Tencent's FAQ (248/54788) quotes for an instance that is not found
    return ApiError("AuthFailure.UnauthorizedOperation", "Unauthorized operation or the instance has been destroyed")


@backend
class MonitorBackend(Backend):
    service = "monitor"
    state_model = MonitorState
    state: MonitorState

    def __init__(self, cloud: "Cloud") -> None:
        super().__init__(cloud)
        self.history: dict[Source, RateHistory] = {}
        # source -> minute -> [new connections, bytes in, bytes out, most open at once]
        self.connections: dict[Source, dict[int, list[int]]] = defaultdict(dict)
        # Events outlive a reset (which rebuilds every backend): subscribe once per cloud, reach the current one.
        if cloud.events not in _SUBSCRIBED:
            _SUBSCRIBED.add(cloud.events)
            events = cloud.events
            events.subscribe("instance.state", lambda instance: _current(cloud).on_instance_state(instance))
            events.subscribe("clb.connection", lambda *args: _current(cloud).on_connection(*args))
            events.subscribe("clb.traffic", lambda *args: _current(cloud).on_traffic(*args))

    # ---- what the data plane and the CVM backend announce ------------------------------------------
    def on_instance_state(self, instance: Any) -> None:
        life = self.state.instances.get(instance.instance_id)
        now = self.cloud.clock.now()
        if life is None:
            spec = INSTANCE_TYPES.get(instance.instance_type)
            life = self.state.instances[instance.instance_id] = InstanceLife(start=now, cores=spec.cpu if spec else 1)
        if instance.state in ("TERMINATED", "LAUNCH_FAILED"):
            life.end = now

    def _bucket(self, source: Source) -> list[int]:
        minute = int(self.cloud.clock.now() // 60)
        buckets = self.connections[source]
        if minute not in buckets:
            buckets[minute] = [0, 0, 0, 0]
            for old in [m for m in buckets if m <= minute - KEEP_LIVE_MINUTES]:
                del buckets[old]
        return buckets[minute]

    def on_connection(self, lb_id: str, listener_id: str, open_now: int) -> None:
        # the CLB's open connections are its busiest listener's (the tiers' CLBs have one listener each)
        for source in (("listener", lb_id, listener_id), ("lb", lb_id)):
            bucket = self._bucket(source)
            bucket[0] += 1
            bucket[3] = max(bucket[3], open_now)

    def on_traffic(self, lb_id: str, listener_id: str, bytes_in: int, bytes_out: int) -> None:
        for source in (("listener", lb_id, listener_id), ("lb", lb_id)):
            bucket = self._bucket(source)
            bucket[1] += bytes_in
            bucket[2] += bytes_out

    # ---- history ------------------------------------------------------------------------------------
    def load_history(self, source: Source, start_minute: int, rates: list[float], cores: int = 1) -> None:
        self.history[source] = RateHistory(start_minute, array("d", rates), cores)

    # ---- sources ------------------------------------------------------------------------------------
    def server_source(self, region: str, instance_id: str) -> Source:
        source: Source = ("cvm", instance_id)
        instance = self.cloud.cvm.state.instances.get(instance_id)  # type: ignore[attr-defined]
        known = instance_id in self.state.instances or source in self.history
        if instance is not None and instance.region != region:
            raise unknown_instance()
        if instance is None and not known:
            raise unknown_instance()
        return source

    def balancer_source(self, region: str, namespace: str, dimensions: dict[str, str]) -> Source | None:
        """The CLB (or its listener) the dimensions name; None when they are not a combination the namespace has."""
        lb_type = "OPEN" if namespace == "QCE/LB_PUBLIC" else "INTERNAL"
        names = set(dimensions)
        base = {"vip"} if lb_type == "OPEN" else {"vip", "vpcId"}
        if names not in (base, base | {"loadBalancerPort", "protocol"}):
            return None
        lb = next(
            (
                lb
                for lb in self.cloud.clb.load_balancers(region)  # type: ignore[attr-defined]
                if lb.load_balancer_type == lb_type
                and lb.vip == dimensions["vip"]
                and (lb_type == "OPEN" or lb.vpc_id == dimensions["vpcId"])
            ),
            None,
        )
        if lb is None:
            raise unknown_instance()
        if "loadBalancerPort" not in names:
            return ("lb", lb.load_balancer_id)
        port, protocol = dimensions["loadBalancerPort"], dimensions["protocol"].lower()
        listener = next(
            (li for li in lb.listeners.values() if str(li.port) == port and li.protocol.lower() == protocol), None
        )
        if listener is None:
            raise unknown_instance()
        return ("listener", lb.load_balancer_id, listener.listener_id)

    def _live_since(self, source: Source) -> tuple[float, float | None, int] | None:
        """(start, end, cores) of the resource behind a source: when it has live minutes."""
        if source[0] == "cvm":
            life = self.state.instances.get(source[1])
            if life is not None:
                return life.start, life.end, life.cores
            instance = self.cloud.cvm.state.instances.get(source[1])  # type: ignore[attr-defined]
            if instance is None:
                return None
            spec = INSTANCE_TYPES.get(instance.instance_type)
            return datetime.fromisoformat(instance.created_time).timestamp(), None, spec.cpu if spec else 1
        lb = self.cloud.clb.state.load_balancers.get(source[1])  # type: ignore[attr-defined]
        return None if lb is None else (lb.created_at, None, 1)

    # ---- one minute of one series -------------------------------------------------------------------
    def minute_values(self, source: Source, metric: str, first: int, last: int) -> dict[int, float]:
        """The metric's value at each minute in [first, last) that has one."""
        values: dict[int, float] = {}
        loaded = self.history.get(source)
        live = self._live_since(source)
        now_minute = int(self.cloud.clock.now() // 60)
        last = min(last, now_minute)  # the current minute is not complete yet
        for minute in range(first, last):
            if loaded is not None and loaded.covers(minute):
                rate = loaded.rates[minute - loaded.start_minute]
                values[minute] = _from_rate(source, metric, rate, loaded.cores)
            elif live is not None and live[0] // 60 <= minute and (live[1] is None or minute <= live[1] // 60):
                values[minute] = self._live(source, metric, minute, live[2])
        return values

    def _live(self, source: Source, metric: str, minute: int, cores: int) -> float:
        if source[0] == "cvm":
            return self.cloud.metrics.minute(source[1], _SERVER_METRIC[metric], minute, cores)
        new, bytes_in, bytes_out, most_open = self.connections.get(source, {}).get(minute, [0, 0, 0, 0])
        return _balancer_metric(metric, new, bytes_in, bytes_out, most_open)


def _from_rate(source: Source, metric: str, rate: float, cores: int) -> float:
    requests = rate * 60
    if source[0] == "cvm":
        if metric in ("CPUUsage", "BaseCpuUsage"):
            return cpu_percent(requests, cores)
        if metric == "MemUsage":
            return MEM_BASELINE
        return mbps(requests * (REQUEST_BYTES_OUT if metric == "LanOuttraffic" else REQUEST_BYTES_IN))
    most_open = rate * CONNECTION_SECONDS
    return _balancer_metric(metric, requests, requests * REQUEST_BYTES_IN, requests * REQUEST_BYTES_OUT, most_open)


def _balancer_metric(metric: str, new: float, bytes_in: float, bytes_out: float, most_open: float) -> float:
    return {
        "ClientConnum": most_open,
        "ClientConcurConn": most_open,
        "ClientNewConn": new / 60,
        "ClientIntraffic": mbps(bytes_in),
        "ClientOuttraffic": mbps(bytes_out),
        "ClientAccIntraffic": bytes_in / MEGABYTE,
        "ClientAccOuttraffic": bytes_out / MEGABYTE,
    }[metric]
