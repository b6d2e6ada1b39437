"""The capacity chart of the Auto Scaling reports: samples kept where a value changed, drivers read from activity
causes (the sandbox's texts), and one SVG in a data: URL that the Prefect UI's markdown renderer shows."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

from flows.shared.capacity_chart import CapacityTimeline, driver_of
from tasks.autoscaling_models import Activity
from tasks.clb import Target

T0 = datetime(2026, 5, 1, 2, 40, tzinfo=UTC)  # 10:40 Beijing time
SVG = "{http://www.w3.org/2000/svg}"
ALARM = (  # the sandbox's alarm cause (sandbox/autoscaling/policies.py), in the real API's style
    "Activity was launched in response to the alarm of the scaling policy tcscale-business-cpu-high (asp-1): "
    "CPU_UTILIZATION average 90.0 GREATER_THAN 70 for 5 period(s) of 60 s."
)
SCHEDULE = (
    "Activity was launched in response to the scheduled action tcscale-session-peak-out (asst-1), which set "
    "MinSize 2, MaxSize 6, DesiredCapacity 4."
)
DIFFERENCE = "Activity was launched in response to a difference between desired capacity and actual capacity."


def activity(activity_id: str, cause: str) -> Activity:
    return Activity(activity_id=activity_id, type="SCALE_OUT", status="SUCCESSFUL", cause=cause)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def decoded(markdown: list[str]) -> ET.Element:
    match = re.fullmatch(r"!\[[^\]]*\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", markdown[0])
    assert match, markdown[0][:120]
    return ET.fromstring(base64.b64decode(match.group(1)))


def test_drivers_are_read_from_the_activity_causes():
    alarm = driver_of(activity("a", ALARM), T0)
    assert alarm is not None
    assert (alarm.metric, alarm.value, alarm.threshold) == ("CPU_UTILIZATION", 90.0, 70.0)
    assert alarm.label == "CPU 90 (limit 70)"
    tracking = driver_of(activity("b", "... the target tracking policy t (asp-2): CPU_UTILIZATION average 85.5, "
                                       "target 60."), T0)  # fmt: skip
    assert tracking is not None and (tracking.value, tracking.threshold) == (85.5, 60.0)
    schedule = driver_of(activity("c", SCHEDULE), T0)
    assert schedule is not None and schedule.label == "schedule tcscale-session-peak-out" and schedule.value is None
    assert driver_of(activity("d", DIFFERENCE), T0) is None  # a user's change: the flow that made it says why


def test_the_timeline_keeps_changes_only_and_draws_them_as_one_svg():
    timeline = CapacityTimeline(title="session tier: asg-1 behind lb-1/lbl-1")
    assert timeline.markdown() == []  # nothing sampled: no chart
    timeline.observe(desired=2, in_service=2, at=at(0))
    timeline.observe_health({Target(instance_id="i1", port=80): True, Target(instance_id="i2", port=80): True,
                             Target(instance_id="i2", port=8080): True}, port=80, at=at(1))  # fmt: skip
    timeline.observe(desired=2, in_service=2, at=at(2))  # no change: no sample
    timeline.observe_activities([activity("s", SCHEDULE), activity("u", DIFFERENCE)], at=at(5))
    timeline.observe_activities([activity("s", SCHEDULE)], at=at(6))  # seen once
    timeline.observe(desired=4, at=at(5))
    timeline.observe(in_service=4, healthy=4, at=at(7))
    timeline.observe_activities([activity("a", ALARM)], at=at(60))
    timeline.observe(at=at(90))
    assert [(s.desired, s.in_service, s.healthy) for s in timeline.samples] == [
        (2, 2, None), (2, 2, 2), (4, 2, 2), (4, 4, 4)]  # fmt: skip
    assert timeline.until == at(90)
    assert [d.label for d in timeline.drivers] == ["schedule tcscale-session-peak-out", "CPU 90 (limit 70)"]
    assert timeline.summary() == "desired 2 → 4; in service 2 → 4; healthy behind the CLB 2 → 4."

    markdown = timeline.markdown()
    assert markdown[2] == timeline.summary()
    svg = decoded(markdown)
    assert (svg.get("width"), svg.get("height")) == ("760", "330")
    lines = svg.findall(f"{SVG}polyline")
    assert [line.get("stroke") for line in lines] == ["#2ca02c", "#1f77b4", "#ff7f0e"]  # in service, desired, healthy
    desired = [tuple(map(float, p.split(","))) for p in (lines[1].get("points") or "").split()]
    assert desired[0][1] > desired[-1][1], "desired rose: the line ends higher (smaller y) than it started"
    assert desired[-1][0] == max(x for x, _ in desired), "drawn up to the last observation"
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "session tier: asg-1 behind lb-1/lbl-1" in texts
    assert "11:00" in texts and "12:00" in texts, texts  # Beijing time on the axis (10:40 to 12:10)
    assert "schedule tcscale-session-peak-out" in texts and "CPU 90 (limit 70)" in texts
    assert not svg.findall(f"{SVG}circle") and len(lines) == 3  # no CPU read yet: the alarm's threshold only
    assert "CPU alarm threshold" in texts and "CPU %" in texts


def test_the_tiers_mean_cpu_is_read_from_cloud_monitor_once_and_a_failed_read_draws_none(
    guide: dict[str, Any], sandbox: Any
) -> None:
    servers = [guide["session_server"]["instance_id"], guide["business_server"]["instance_id"]]
    sandbox.admin("POST", "monitor/history", {"profile": "guide-lunch", "days": 1, "instance_ids": servers})
    now = datetime.fromisoformat(sandbox.admin("GET", "clock")["now"].replace("Z", "+00:00"))
    timeline = CapacityTimeline(title="tier")
    timeline.observe(desired=2, in_service=2, at=now - timedelta(minutes=30))
    timeline.observe_health({Target(instance_id=i, port=80): True for i in servers}, port=80, at=now)
    timeline.read_cpu(guide["region"])
    assert 29 <= len(timeline.cpu) <= 31 and all(0 < v <= 100 for _, v in timeline.cpu), timeline.cpu
    assert timeline.cpu_note.startswith("CPU: the mean CPUUsage of 2 server(s)")
    markdown = timeline.markdown()
    assert markdown[-1] == timeline.cpu_note
    svg = decoded(markdown)
    assert [line.get("stroke") for line in svg.findall(f"{SVG}polyline")][-1] == "#9467bd"
    assert "mean CPU (Cloud Monitor)" in [t.text for t in svg.iter(f"{SVG}text")]

    timeline.servers = {"ins-notthere"}  # GetMonitorData refuses an unknown instance: no line, said so, no raise
    timeline.read_cpu(guide["region"])
    assert timeline.cpu == [] and timeline.cpu_note.startswith("No CPU line: Cloud Monitor could not be read")
    assert not [p for p in decoded(timeline.markdown()).findall(f"{SVG}polyline") if p.get("stroke") == "#9467bd"]
