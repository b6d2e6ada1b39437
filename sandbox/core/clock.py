"""The sandbox's clock: virtual time (wall time plus an offset tests can advance) and latency profiles.

Asynchronous operations (image creation, instance boot, CLB tasks) do not run on timers: each
resource records when its pending transition is due, and `Cloud.advance()` applies every due
transition before a request is served and on a background tick. That keeps state persistable
and makes "advance the clock by 2 hours" a single assignment.
"""

import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

Profile = Literal["instant", "realistic"]

# Seconds each asynchronous operation takes on the real cloud (order of magnitude), scaled by
# `time_scale` in the realistic profile. The instant profile makes every one of them 0.
REALISTIC_SECONDS: dict[str, float] = {
    "image.create": 120.0,
    "instance.launch": 30.0,
    "instance.start": 15.0,
    "instance.stop": 10.0,
    "instance.reboot": 20.0,
    "instance.terminate": 5.0,
    "clb.create": 6.0,
    "clb.task": 2.0,
    "as.activity.visible": 2.0,  # a new scaling activity shows in DescribeAutoScalingActivities after this
}


class ClockSettings(BaseModel):
    profile: Profile = "instant"
    time_scale: float = Field(1.0, gt=0, description="multiplies every realistic latency")
    offset: float = Field(0.0, description="seconds added to wall time (advanced by tests)")


class Clock:
    def __init__(self, settings: ClockSettings | None = None) -> None:
        self.settings = settings or ClockSettings()

    def now(self) -> float:
        return time.time() + self.settings.offset

    def delay(self, operation: str) -> float:
        if self.settings.profile == "instant":
            return 0.0
        return REALISTIC_SECONDS[operation] * self.settings.time_scale

    def due(self, operation: str) -> float:
        """When an operation started now completes."""
        return self.now() + self.delay(operation)

    def advance(self, seconds: float) -> None:
        self.settings.offset += seconds

    def iso(self, at: float | None = None) -> str:
        """`2026-11-23T10:00:00Z`, the API's timestamp format."""
        moment = self.now() if at is None else at
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def plain(self, at: float | None = None) -> str:
        """`2026-11-23 10:00:00`, the format CLB and AS use."""
        moment = self.now() if at is None else at
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")
