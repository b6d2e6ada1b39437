"""The monitor service (Cloud Monitor 2018-07-24): GetMonitorData and DescribeBaseMetrics over the traffic the
sandbox's servers and load balancers really serve, plus loaded history (`POST /_sandbox/monitor/history`)."""

from sandbox.monitor import admin, backend, responses  # noqa: F401
