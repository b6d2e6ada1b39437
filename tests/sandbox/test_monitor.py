"""Cloud Monitor 2018-07-24 conformance, through the real SDK: GetMonitorData over the traffic the sandbox really
serves and over loaded history, its limits and documented errors, and DescribeBaseMetrics."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tencentcloud.clb.v20180317 import clb_client
from tencentcloud.clb.v20180317 import models as clb_models
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.monitor.v20180724 import models, monitor_client

from sandbox.core.metrics import cpu_percent
from tests.sandbox.as_world import seed_guide
from tests.sdk import load, poll

BEIJING = "+08:00"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class Monitor:
    def __init__(self, client: Any, sandbox: Any) -> None:
        self.sdk = client(monitor_client.MonitorClient)
        self.clb_sdk = client(clb_client.ClbClient)
        self.sandbox = sandbox

    def call(self, action: str, **params: Any) -> dict[str, Any]:
        request = getattr(models, f"{action}Request")()
        request.from_json_string(json.dumps(params))
        return json.loads(getattr(self.sdk, action)(request).to_json_string())

    def error(self, action: str, **params: Any) -> TencentCloudSDKException:
        with pytest.raises(TencentCloudSDKException) as info:
            self.call(action, **params)
        return info.value

    def clb(self, action: str, **params: Any) -> Any:
        request = getattr(clb_models, f"{action}Request")()
        request.from_json_string(json.dumps(params))
        return getattr(self.clb_sdk, action)(request)

    def now(self) -> datetime:
        return datetime.fromisoformat(self.sandbox.admin("GET", "clock")["now"].replace("Z", "+00:00"))

    def public_clb(self, port: int, vpc_id: str | None = None) -> tuple[str, str, str]:
        """A public CLB with a TCP listener on `port`: (its id, the listener's id, its VIP)."""
        created = self.clb("CreateLoadBalancer", LoadBalancerType="OPEN", **({"VpcId": vpc_id} if vpc_id else {}))
        poll(lambda: self.clb("DescribeTaskStatus", DealName=created.DealName).Status == 0, what="CLB")
        lb_id = created.LoadBalancerIds[0]
        listener = self.clb("CreateListener", LoadBalancerId=lb_id, Ports=[port], Protocol="TCP")
        poll(lambda: self.clb("DescribeTaskStatus", TaskId=listener.RequestId).Status == 0, what="listener")
        vip = self.clb("DescribeLoadBalancers", LoadBalancerIds=[lb_id]).LoadBalancerSet[0].LoadBalancerVips[0]
        return lb_id, listener.ListenerIds[0], vip


@pytest.fixture
def mon(client: Any, sandbox: Any) -> Monitor:
    return Monitor(client, sandbox)


def test_cpu_and_clb_metrics_follow_the_requests_served_through_the_vip(mon: Monitor, sandbox: Any) -> None:
    s = seed_guide(sandbox)
    business = s["business_server"]
    port = s["ports"]["business"]
    lb_id, listener_id, vip = mon.public_clb(port, s["vpc"]["vpc_id"])
    registered = mon.clb(
        "RegisterTargets",
        LoadBalancerId=lb_id,
        ListenerId=listener_id,
        Targets=[{"InstanceId": business["instance_id"], "Port": port}],
    )
    poll(lambda: mon.clb("DescribeTaskStatus", TaskId=registered.RequestId).Status == 0, what="registration")
    url = f"http://{vip}:{s['ports']['map'][str(port)]}/"
    poll(lambda: _answers(url), what="the business app through the VIP", timeout=30)
    mon.sandbox.admin("POST", "clock", {"advance": 60})  # a fresh minute for the requests counted below
    served_before = sandbox.admin("GET", "metrics")["servers"][business["instance_id"]]["requests"]
    start = mon.now().replace(second=0, microsecond=0)
    load(url, 30)
    served = sandbox.admin("GET", "metrics")["servers"][business["instance_id"]]["requests"] - served_before
    assert served == 30
    sandbox.admin("POST", "clock", {"advance": 60})  # that minute is complete: it has a point now

    window = {"StartTime": iso(start), "EndTime": iso(start), "Period": 60}
    cpu = mon.call(
        "GetMonitorData",
        Namespace="QCE/CVM",
        MetricName="CPUUsage",
        Instances=[{"Dimensions": [{"Name": "InstanceId", "Value": business["instance_id"]}]}],
        **window,
    )
    (point,) = cpu["DataPoints"]
    assert point["Timestamps"] == [start.timestamp()]
    assert point["Values"] == [round(cpu_percent(30, 1), 3)]  # the seed's S5.SMALL2 has 1 core

    def clb_metric(metric: str, *listener: dict[str, str]) -> float:
        dimensions = [{"Name": "vip", "Value": vip}, *listener]
        answer = mon.call(
            "GetMonitorData",
            Namespace="QCE/LB_PUBLIC",
            MetricName=metric,
            Instances=[{"Dimensions": dimensions}],
            **window,
        )
        return answer["DataPoints"][0]["Values"][0]

    on_listener = ({"Name": "loadBalancerPort", "Value": str(port)}, {"Name": "protocol", "Value": "tcp"})
    assert clb_metric("ClientNewConn") == clb_metric("ClientNewConn", *on_listener) == 0.5  # 30 in a minute, per s
    assert clb_metric("ClientConnum") >= 1
    assert clb_metric("ClientAccOuttraffic", *on_listener) > clb_metric("ClientAccIntraffic", *on_listener) > 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_loaded_history_has_the_profiles_peaks_weekdays_and_retention(mon: Monitor, sandbox: Any) -> None:
    lb_id, _, vip = mon.public_clb(80)
    loaded = sandbox.admin(
        "POST", "monitor/history", {"profile": "lunch-and-evening", "days": 28, "load_balancer_id": lb_id, "seed": 3}
    )
    assert loaded["minutes"] == 28 * 1440 and f"lb/{lb_id}" in loaded["sources"]
    now = mon.now()
    instances = [{"Dimensions": [{"Name": "vip", "Value": vip}]}]
    hourly = mon.call(
        "GetMonitorData",
        Namespace="QCE/LB_PUBLIC",
        MetricName="ClientNewConn",
        Instances=instances,
        Period=3600,
        StartTime=iso(now - timedelta(days=27)),
        EndTime=iso(now - timedelta(minutes=1)),
    )["DataPoints"][0]
    by_hour: dict[int, list[float]] = {}
    for timestamp, value in zip(hourly["Timestamps"], hourly["Values"], strict=True):
        by_hour.setdefault(datetime.fromtimestamp(timestamp, UTC).hour + 8, []).append(value)  # Beijing hour
    typical = {hour % 24: sorted(values)[len(values) // 2] for hour, values in by_hour.items()}
    assert typical[12] > 2.5 * typical[16]  # the lunch peak, 11:30-13:30, at 3x the day level
    assert typical[20] > 2 * typical[16]  # the evening peak, 19:00-21:00, at 2.5x
    assert typical[4] < 0.5 * typical[16]  # the night

    minute = dict(Namespace="QCE/LB_PUBLIC", MetricName="ClientNewConn", Instances=instances, Period=60)
    old = mon.call(
        "GetMonitorData",
        **minute,
        StartTime=iso(now - timedelta(days=20)),
        EndTime=iso(now - timedelta(days=19, hours=22)),
    )
    assert old["DataPoints"][0]["Values"] == []  # one-minute CLB data is kept 15 days
    recent = mon.call(
        "GetMonitorData",
        **minute,
        StartTime=iso(now - timedelta(days=2)),
        EndTime=iso(now - timedelta(days=2) + timedelta(hours=2)),
    )
    assert len(recent["DataPoints"][0]["Values"]) in (120, 121)


def test_get_monitor_data_refuses_what_the_api_refuses(mon: Monitor, sandbox: Any) -> None:
    _, _, vip = mon.public_clb(80)
    one = [{"Dimensions": [{"Name": "vip", "Value": vip}]}]
    now = mon.now()
    base = dict(Namespace="QCE/LB_PUBLIC", MetricName="ClientNewConn", Instances=one)
    assert mon.error("GetMonitorData", **{**base, "Namespace": "QCE/NOPE"}).code == "InvalidParameterValue"
    assert mon.error("GetMonitorData", **{**base, "MetricName": "CpuUsage"}).code == "InvalidParameterValue"
    assert mon.error("GetMonitorData", **base, Period=10).code == "InvalidParameterValue"
    assert mon.error("GetMonitorData", **base, StartTime="yesterday").code == "InvalidParameterValue"
    backwards = mon.error("GetMonitorData", **base, StartTime=iso(now), EndTime=iso(now - timedelta(hours=1)))
    assert backwards.code == "InvalidParameterValue"
    # at most 50 instances and 7,200 points (instances x points) per request
    assert mon.error("GetMonitorData", **{**base, "Instances": one * 51}).code == "LimitExceeded"
    start, end = now - timedelta(days=4), now  # 1,153 points of 300 s
    assert mon.call(
        "GetMonitorData", **{**base, "Instances": one * 6}, Period=300, StartTime=iso(start), EndTime=iso(end)
    )
    too_many = mon.error(
        "GetMonitorData", **{**base, "Instances": one * 7}, Period=300, StartTime=iso(start), EndTime=iso(end)
    )
    assert too_many.code == "LimitExceeded" and "7200" in too_many.message.replace(",", "")
    gone = [{"Dimensions": [{"Name": "InstanceId", "Value": "ins-00000000"}]}]
    unknown = mon.error("GetMonitorData", Namespace="QCE/CVM", MetricName="CPUUsage", Instances=gone)
    assert unknown.code == "AuthFailure.UnauthorizedOperation"
    no_clb = [{"Dimensions": [{"Name": "vip", "Value": "127.9.9.9"}]}]
    assert mon.error("GetMonitorData", **{**base, "Instances": no_clb}).code == "AuthFailure.UnauthorizedOperation"
    # a dimension name the namespace does not have (the FAQ: mind the case): an empty series, no error
    wrong_case = [{"Dimensions": [{"Name": "VIP", "Value": vip}]}]
    empty = mon.call("GetMonitorData", **{**base, "Instances": wrong_case})["DataPoints"][0]
    assert empty["Timestamps"] == [] and empty["Values"] == []


def test_describe_base_metrics_lists_the_metrics_their_periods_and_dimensions(mon: Monitor) -> None:
    cvm = mon.call("DescribeBaseMetrics", Namespace="QCE/CVM", MetricName="CPUUsage")["MetricSet"]
    assert [m["MetricName"] for m in cvm] == ["CPUUsage"]
    assert cvm[0]["Period"] == [60, 300, 3600, 86400] and cvm[0]["Unit"] == "%"
    assert cvm[0]["Dimensions"] == [{"Dimensions": ["InstanceId"]}]
    private = {m["MetricName"]: m for m in mon.call("DescribeBaseMetrics", Namespace="QCE/LB_PRIVATE")["MetricSet"]}
    assert {"ClientConnum", "ClientNewConn", "ClientIntraffic", "ClientOuttraffic"} <= set(private)
    assert ["vip", "vpcId"] in [d["Dimensions"] for d in private["ClientConnum"]["Dimensions"]]
    assert mon.call("DescribeBaseMetrics", Namespace="QCE/NOPE")["MetricSet"] == []
