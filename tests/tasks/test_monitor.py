"""tasks.monitor against the sandbox's Cloud Monitor: a metric's series over weeks, paged by the API's limits."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasks import monitor
from tasks.cloud import call_json, clients_for


def public_clb(sandbox: Any) -> tuple[str, str]:
    """A public CLB with a TCP listener on 80 (no servers needed: its metrics come from loaded history)."""
    clb = clients_for().clb
    created = call_json(clb, "CreateLoadBalancer", {"LoadBalancerType": "OPEN"})
    lb_id = created["LoadBalancerIds"][0]
    call_json(clb, "CreateListener", {"LoadBalancerId": lb_id, "Ports": [80], "Protocol": "TCP"})
    lb = call_json(clb, "DescribeLoadBalancers", {"LoadBalancerIds": [lb_id]})["LoadBalancerSet"][0]
    return lb_id, lb["LoadBalancerVips"][0]


def sandbox_now(sandbox: Any) -> datetime:
    return datetime.fromisoformat(sandbox.admin("GET", "clock")["now"].replace("Z", "+00:00"))


def calls(sandbox: Any) -> int:
    return sandbox.admin("GET", "stats")["requests"].get("monitor", {}).get("GetMonitorData", 0)


def test_read_metric_pages_four_weeks_of_five_minute_points(cloud_env: Any) -> None:
    lb_id, vip = public_clb(cloud_env)
    cloud_env.admin("POST", "monitor/history", {"profile": "lunch-and-evening", "days": 28, "load_balancer_id": lb_id})
    end = sandbox_now(cloud_env).replace(second=0, microsecond=0) - timedelta(minutes=5)
    start = end - timedelta(days=28) + timedelta(minutes=5)
    cloud_env.admin("POST", "stats/reset")
    (series,) = monitor.read_metric.fn(
        "QCE/LB_PUBLIC", "ClientNewConn", [monitor.balancer_dimensions(vip)], start, end, period=300
    )
    points = 28 * 288
    assert len(series.values) == points  # no gap, no point twice where the windows meet
    assert series.timestamps == sorted(set(series.timestamps))
    assert calls(cloud_env) == -(-points // monitor.MAX_POINTS_PER_CALL)  # 6 calls of at most 1,440 points
    peak = [v for t, v in series.points() if t.astimezone(monitor.BEIJING).hour == 12]
    afternoon = [v for t, v in series.points() if t.astimezone(monitor.BEIJING).hour == 16]
    assert sum(peak) / len(peak) > 2 * sum(afternoon) / len(afternoon)


def test_read_metric_groups_instances_and_keeps_each_series_its_own(cloud_env: Any) -> None:
    lb_id, vip = public_clb(cloud_env)
    cloud_env.admin("POST", "monitor/history", {"profile": "guide-lunch", "days": 2, "load_balancer_id": lb_id})
    end = sandbox_now(cloud_env) - timedelta(hours=1)
    start = end - timedelta(minutes=5 * 287)  # 288 points of 300 s
    whole, listener = monitor.balancer_dimensions(vip), monitor.balancer_dimensions(vip, port=80)
    cloud_env.admin("POST", "stats/reset")
    series = monitor.read_metric.fn("QCE/LB_PUBLIC", "ClientNewConn", [whole] * 11 + [listener], start, end)
    # 12 instances: a group of 10 (144 points a call: 2 calls for 288) and one of 2 (1 call)
    assert calls(cloud_env) == 3
    assert [s.dimensions for s in series] == [whole] * 11 + [listener]
    assert all(s.values == series[0].values and len(s.values) >= 288 for s in series)


def test_read_metric_refuses_a_bad_range_before_calling(cloud_env: Any) -> None:
    cloud_env.admin("POST", "stats/reset")
    now = datetime.now(UTC)
    dims = [monitor.server_dimensions("ins-12345678")]
    with pytest.raises(ValueError, match="period"):
        monitor.read_metric.fn("QCE/CVM", "CPUUsage", dims, now - timedelta(hours=1), now, period=10)
    with pytest.raises(ValueError, match="before it starts"):
        monitor.read_metric.fn("QCE/CVM", "CPUUsage", dims, now, now - timedelta(hours=1))
    with pytest.raises(ValueError, match="timezone"):
        monitor.read_metric.fn("QCE/CVM", "CPUUsage", dims, datetime(2026, 1, 1), datetime(2026, 1, 2))
    assert calls(cloud_env) == 0
