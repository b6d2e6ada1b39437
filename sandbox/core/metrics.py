"""Per-server monitoring metrics (what Cloud Monitor shows and Auto Scaling alarms read), derived from the
real requests each server's apps serve, one sample per minute of sandbox time.

The data plane announces every request an app served with `cloud.events.emit("guest.request",
instance_id, bytes_in, bytes_out)`; requests and bytes are summed per server and minute. From them:

- CPU_UTILIZATION (%) = IDLE_CPU + 100 x requests x CPU_SECONDS_PER_REQUEST / (60 s x the type's cores),
  at most 100: a request costs 50 ms of one core (a Wafer login: a signature check, a session lookup);
  so a 1-core server is saturated by 20 requests/s, a 2-core one by 40;
- LAN_TRAFFIC_OUT / LAN_TRAFFIC_IN (Mbit/s) = bytes x 8 / 60 s / 10^6;
- MEM_UTILIZATION a constant MEM_BASELINE %, WAN_TRAFFIC_* and TCP_CURR_ESTAB 0.

`override(instance_id, metric, value)` pins a metric of a server to a value (None removes the pin), for
deterministic tests: `POST /_sandbox/metrics` (sandbox.autoscaling.admin).
"""

from collections import defaultdict
from collections.abc import Callable

METRICS = (
    "CPU_UTILIZATION",
    "MEM_UTILIZATION",
    "LAN_TRAFFIC_OUT",
    "LAN_TRAFFIC_IN",
    "WAN_TRAFFIC_OUT",
    "WAN_TRAFFIC_IN",
    "TCP_CURR_ESTAB",
)
CPU_SECONDS_PER_REQUEST = 0.05
IDLE_CPU = 1.0
MEM_BASELINE = 20.0
KEEP_MINUTES = 24 * 60  # samples older than a day are dropped


def cpu_percent(requests_per_minute: float, cores: int) -> float:
    """CPU_UTILIZATION of a server that served this many requests in one minute."""
    return min(100.0, IDLE_CPU + 100.0 * requests_per_minute * CPU_SECONDS_PER_REQUEST / (60.0 * max(cores, 1)))


def mbps(bytes_per_minute: float) -> float:
    """Bandwidth (Mbit/s) of this many bytes in one minute."""
    return bytes_per_minute * 8 / 60 / 1e6


class ServerMetrics:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        # instance id -> minute index -> [requests, bytes in, bytes out]
        self._samples: dict[str, dict[int, list[int]]] = defaultdict(dict)
        self.overrides: dict[tuple[str, str], float] = {}

    def clear(self) -> None:
        self._samples.clear()
        self.overrides.clear()

    def record(self, instance_id: str, bytes_in: int, bytes_out: int) -> None:
        minute = int(self._now() // 60)
        bucket = self._samples[instance_id].setdefault(minute, [0, 0, 0])
        bucket[0] += 1
        bucket[1] += bytes_in
        bucket[2] += bytes_out
        if len(self._samples[instance_id]) > KEEP_MINUTES:
            for old in sorted(self._samples[instance_id])[:-KEEP_MINUTES]:
                del self._samples[instance_id][old]

    def override(self, instance_id: str, metric: str, value: float | None) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}")
        if value is None:
            self.overrides.pop((instance_id, metric), None)
        else:
            self.overrides[(instance_id, metric)] = float(value)

    def minute(self, instance_id: str, metric: str, minute: int, cores: int) -> float:
        """The metric of one server over one minute (minute index = epoch seconds // 60)."""
        pinned = self.overrides.get((instance_id, metric))
        if pinned is not None:
            return pinned
        requests, bytes_in, bytes_out = self._samples.get(instance_id, {}).get(minute, [0, 0, 0])
        if metric == "CPU_UTILIZATION":
            return cpu_percent(requests, cores)
        if metric == "LAN_TRAFFIC_OUT":
            return mbps(bytes_out)
        if metric == "LAN_TRAFFIC_IN":
            return mbps(bytes_in)
        if metric == "MEM_UTILIZATION":
            return MEM_BASELINE
        return 0.0

    def window(self, instance_id: str, metric: str, start: float, end: float, cores: int) -> list[float]:
        """One sample per whole minute in [start, end)."""
        return [self.minute(instance_id, metric, m, cores) for m in range(int(start // 60), int(end // 60))]

    def requests(self, instance_id: str) -> int:
        return sum(bucket[0] for bucket in self._samples.get(instance_id, {}).values())
