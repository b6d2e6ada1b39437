"""The demo's second half, the guide's "配置弹性伸缩": both tiers handed to Auto Scaling, then one lunch peak.

After the scale-out, `configure-autoscaling` makes each tier a scaling group (its servers attached and protected,
the lunch-peak scheduled actions, the CPU alarms). Then the sandbox's clock moves (`POST /_sandbox/clock`) to the
scale-out's firing, lead minutes before 11:00: the extra servers must be IN_SERVICE and healthy behind each tier's
CLB before 11:00; then to 13:00: they must be gone and the protected servers left. What the demo sees is printed
as a timeline and drawn with the reports' capacity chart into one SVG file per tier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flows.autoscaling_steps.outcome import AutoScalingOutcome
from flows.autoscaling_steps.plan import BEIJING
from flows.shared.capacity_chart import CapacityTimeline
from tasks import autoscaling as asg
from tasks import clb
from tasks.waiters import wait_until

TIERS = ("session", "business")
WAIT_SECONDS = 60.0  # the instant profile: a launch takes the servers' boot, a few seconds


@dataclass
class TierWatch:
    """One tier's group as the demo watches it on the sandbox clock."""

    outcome: AutoScalingOutcome
    base: int
    timeline: CapacityTimeline = field(default_factory=CapacityTimeline)
    told: int = 0  # drivers already printed

    @property
    def group_id(self) -> str:
        return self.outcome.group_id or ""


class LunchPeak:
    def __init__(self, sandbox: Any, region: str, echo: Callable[[str], None]) -> None:
        self.sandbox, self.region, self.echo = sandbox, region, echo
        self.ok = True

    def now(self) -> datetime:
        stamp = self.sandbox.admin("GET", "clock")["now"].replace("Z", "+00:00")
        return datetime.fromisoformat(stamp).astimezone(BEIJING)

    def advance_to(self, moment: datetime) -> None:
        seconds = (moment - self.now()).total_seconds()
        self.sandbox.admin("POST", "clock", {"advance": max(seconds, 0) + 1})

    def check(self, tier: TierWatch, ok: bool, what: str) -> None:
        for driver in tier.timeline.drivers[tier.told :]:  # what fired since the last line: the schedule
            self.echo(f"  {driver.at.astimezone(BEIJING):%H:%M:%S}  {tier.outcome.tier}: {driver.label} fired")
        tier.told = len(tier.timeline.drivers)
        self.ok = self.ok and ok
        self.echo(f"  {self.now():%H:%M:%S}  {tier.outcome.tier}: {what}: {'OK' if ok else 'FAILED'}")

    def observe(self, tier: TierWatch) -> tuple[asg.Group, int, list[asg.Member]]:
        """The group, its healthy targets on the tier's port, its members: drawn on the tier's chart."""
        at = self.now()
        group = asg.describe_group(self.region, tier.group_id)
        assert group is not None, f"scaling group {tier.group_id} is gone"
        fwd = group.forward[0]
        tier.timeline.observe_group(group, at)
        tier.timeline.observe_activities(asg.activities(self.region, tier.group_id, 20), at)
        health = clb.target_health(self.region, fwd.load_balancer_id, fwd.listener_id)
        tier.timeline.observe_health(health, fwd.port, at)
        healthy = sum(ok for target, ok in health.items() if target.port == fwd.port)
        return group, healthy, asg.members(self.region, tier.group_id)

    def settle_at(self, tier: TierWatch, desired: int) -> tuple[asg.Group, int, list[asg.Member]]:
        """Poll (backing off) until the group has settled at `desired` and that many servers are healthy."""

        def done(seen: tuple[asg.Group, int, list[asg.Member]]) -> bool:
            group, healthy, _ = seen
            return group.settled and group.desired == desired and healthy == desired

        what = f"{tier.outcome.tier} tier at {desired} servers, all healthy behind its CLB"
        return wait_until(lambda: self.observe(tier), done, lambda _: None, what, WAIT_SECONDS, 0.2, 1.0)

    def run(self, outcomes: list[AutoScalingOutcome], chart_dir: Path) -> bool:
        tiers = [TierWatch(o, len(asg.members(self.region, o.group_id or ""))) for o in outcomes]
        for tier in tiers:
            made = tier.outcome
            tier.timeline.title = f"{made.tier} tier: {tier.group_id} behind {made.load_balancer_id}, the lunch peak"
        firing = max(datetime.fromisoformat(t.outcome.schedule[0].start_time) for t in tiers)
        eleven, one = firing.replace(hour=11, minute=0, second=0), firing.replace(hour=13, minute=0, second=0)
        self.echo(f"\nlunch peak on the sandbox clock (Beijing time), peak scale-out at {firing:%a %H:%M}:")
        self.advance_to(firing - timedelta(minutes=10))  # the morning before the peak
        for tier in tiers:
            group, healthy, _ = self.observe(tier)
            self.echo(f"  {self.now():%H:%M:%S}  {tier.outcome.tier}: desired {group.desired}, "
                      f"{group.in_service} in service, {healthy} healthy")  # fmt: skip
        self.advance_to(firing)
        for tier in tiers:
            extra = tier.outcome.schedule[0].desired
            group, healthy, members = self.settle_at(tier, extra)
            new = [m.instance_id for m in members if m.creation_type == "AUTO_CREATION" and m.state == "IN_SERVICE"]
            self.check(
                tier,
                len(new) == extra - tier.base and self.now() < eleven,
                f"{extra - tier.base} extra server(s) {', '.join(new)} in service, {healthy} healthy behind "
                f"{tier.outcome.load_balancer_id} before 11:00",
            )
        self.advance_to(one)
        for tier in tiers:
            group, healthy, members = self.settle_at(tier, tier.base)
            extra_left = [m.instance_id for m in members if m.creation_type == "AUTO_CREATION"]
            self.check(
                tier,
                not extra_left and len(members) == tier.base,
                f"after 13:00 the extra servers are gone, {len(members)} protected left, {healthy} healthy",
            )
        self.advance_to(one + timedelta(minutes=10))  # the chart's tail: the tier holds its size after the peak
        for tier in tiers:
            self.observe(tier)
            chart = chart_dir / f"lunch-peak-{tier.outcome.tier}.svg"
            tier.timeline.read_cpu(self.region)  # the tier's mean CPU from Cloud Monitor, as the reports draw it
            chart.write_text(tier.timeline.svg())
            self.echo(f"  chart of the {tier.outcome.tier} tier: {chart}")
        return self.ok
