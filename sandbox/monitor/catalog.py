"""The metrics the sandbox's Cloud Monitor serves: names, units, periods, statistics and dimensions, as
Tencent's metric pages list them (CVM: 248/6843; public CLB: 248/51197; private CLB: 248/51899) and
`DescribeBaseMetrics` answers them. Periods are those of the real metrics the sandbox can compute from its
one-minute samples (the real 10 s granularity is not emulated).

Limits, from the API's own description in tencentcloud-sdk-python-monitor 3.1.189 (`GetMonitorData`): at
most 50 instances and 7,200 data points per request (older pages said 10 and 1,440; the product pages at
those, which the current limits also accept). Retention by period (248/31014's notes, and
/work/shared/reference/monitor-and-prices.md): 1 min: 15 days (CVM CPU / network: 31 days), 5 min: 31 days,
1 h: 93 days, 1 day: 186 days.
"""

from typing import Literal

from pydantic import BaseModel

MAX_INSTANCES = 50
MAX_POINTS = 7200
DAY = 86400
RETENTION_SECONDS = {60: 15 * DAY, 300: 31 * DAY, 3600: 93 * DAY, 86400: 186 * DAY}
CVM_LONG_MINUTE_RETENTION = 31 * DAY  # CVM CPU / network at 1 min
PERIODS = (60, 300, 3600, 86400)

Namespace = Literal["QCE/CVM", "QCE/LB_PUBLIC", "QCE/LB_PRIVATE"]


class MetricSpec(BaseModel):
    name: str
    unit: str
    unit_cname: str
    cname: str
    meaning_en: str
    statistic: Literal["max", "sum"] = "max"  # how one-minute values combine into longer periods
    long_minute_retention: bool = False


CVM_DIMENSIONS = [["InstanceId"]]
LB_PUBLIC_DIMENSIONS = [["vip"], ["vip", "loadBalancerPort", "protocol"]]
LB_PRIVATE_DIMENSIONS = [["vip", "vpcId"], ["vip", "vpcId", "loadBalancerPort", "protocol"]]

_CVM = [
    MetricSpec(
        name="CPUUsage",
        unit="%",
        unit_cname="%",
        cname="CPU利用率",
        meaning_en="CPU utilization",
        long_minute_retention=True,
    ),
    MetricSpec(
        name="BaseCpuUsage",
        unit="%",
        unit_cname="%",
        cname="基础CPU使用率",
        meaning_en="Basic CPU utilization (no agent needed)",
        long_minute_retention=True,
    ),
    MetricSpec(name="MemUsage", unit="%", unit_cname="%", cname="内存利用率", meaning_en="Memory utilization"),
    MetricSpec(
        name="LanOuttraffic",
        unit="Mbps",
        unit_cname="Mbps",
        cname="内网出带宽",
        meaning_en="Private network outbound bandwidth",
        long_minute_retention=True,
    ),
    MetricSpec(
        name="LanIntraffic",
        unit="Mbps",
        unit_cname="Mbps",
        cname="内网入带宽",
        meaning_en="Private network inbound bandwidth",
        long_minute_retention=True,
    ),
]

_LB = [
    MetricSpec(
        name="ClientConnum",
        unit="Count",
        unit_cname="个",
        cname="客户端到 LB 的活跃连接数",
        meaning_en="Active connections from clients to the CLB",
    ),
    MetricSpec(
        name="ClientConcurConn",
        unit="Count",
        unit_cname="个",
        cname="客户端到 LB 的并发连接数",
        meaning_en="Concurrent connections from clients to the CLB",
    ),
    MetricSpec(
        name="ClientNewConn",
        unit="Count/s",
        unit_cname="个/秒",
        cname="客户端到 LB 的新建连接数",
        meaning_en="New connections from clients to the CLB per second",
    ),
    MetricSpec(
        name="ClientIntraffic",
        unit="Mbps",
        unit_cname="Mbps",
        cname="客户端到 LB 的入带宽",
        meaning_en="Inbound bandwidth from clients to the CLB",
    ),
    MetricSpec(
        name="ClientOuttraffic",
        unit="Mbps",
        unit_cname="Mbps",
        cname="客户端到 LB 的出带宽",
        meaning_en="Outbound bandwidth from the CLB to clients",
    ),
    MetricSpec(
        name="ClientAccIntraffic",
        unit="MB",
        unit_cname="MB",
        cname="客户端到 LB 的入流量",
        meaning_en="Inbound traffic from clients to the CLB",
        statistic="sum",
    ),
    MetricSpec(
        name="ClientAccOuttraffic",
        unit="MB",
        unit_cname="MB",
        cname="客户端到 LB 的出流量",
        meaning_en="Outbound traffic from the CLB to clients",
        statistic="sum",
    ),
]

METRICS: dict[str, dict[str, MetricSpec]] = {
    "QCE/CVM": {m.name: m for m in _CVM},
    "QCE/LB_PUBLIC": {m.name: m for m in _LB},
    "QCE/LB_PRIVATE": {m.name: m for m in _LB},
}
DIMENSIONS: dict[str, list[list[str]]] = {
    "QCE/CVM": CVM_DIMENSIONS,
    "QCE/LB_PUBLIC": LB_PUBLIC_DIMENSIONS,
    "QCE/LB_PRIVATE": LB_PRIVATE_DIMENSIONS,
}


def retention(namespace: str, metric: MetricSpec, period: int) -> int:
    """How far back (seconds) data of this period is kept."""
    if period == 60 and namespace == "QCE/CVM" and metric.long_minute_retention:
        return CVM_LONG_MINUTE_RETENTION
    return RETENTION_SECONDS[period]
