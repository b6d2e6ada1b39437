"""Scheduled actions: set a group's sizes at StartTime (Beijing time), then per Recurrence until EndTime.

They fire when the sandbox clock passes their time (`POST /_sandbox/clock {"advance": s}` included).
A clock that jumps over several occurrences of a recurring action fires it once (the sizes it sets are
the same each time) and moves on to the next occurrence after now.
"""

from typing import TYPE_CHECKING, Any

from sandbox.autoscaling.common import check_id, check_name
from sandbox.autoscaling.cron import Cron, parse_beijing
from sandbox.autoscaling.groups import check_sizes
from sandbox.autoscaling.models import AsState, AutoScalingGroup, ScheduledAction
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

PER_GROUP = 100
NAME_BYTES = 60


class ScheduleRules:
    state: AsState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def group(self, region: str, group_id: str) -> AutoScalingGroup: ...

    def scheduled_action(self, region: str, action_id: str) -> ScheduledAction:
        check_id("asst", action_id)
        action = self.state.scheduled_actions.get(action_id)
        if action is None or action.region != region:
            raise ApiError(
                "ResourceNotFound.ScheduledActionNotFound", f"The scheduled action `{action_id}` does not exist."
            )
        return action

    def scheduled_actions(self, region: str) -> list[ScheduledAction]:
        return [a for a in self.state.scheduled_actions.values() if a.region == region]

    def create_scheduled_action(self, region: str, p: dict[str, Any]) -> ScheduledAction:
        group = self.group(region, p["AutoScalingGroupId"])
        siblings = [a for a in self.state.scheduled_actions.values() if a.group_id == group.group_id]
        if len(siblings) >= PER_GROUP:
            raise ApiError("LimitExceeded.ScheduledActionLimitExceeded", f"A group takes at most {PER_GROUP} actions.")
        action = ScheduledAction(
            scheduled_action_id=new_id("asst"),
            region=region,
            group_id=group.group_id,
            name="",
            min_size=p["MinSize"],
            max_size=p["MaxSize"],
            desired=p["DesiredCapacity"],
            start_time=p["StartTime"],
            created_time=self.cloud.clock.iso(),
            next_at=None,
        )
        self._update(action, p, new=True)
        self.state.scheduled_actions[action.scheduled_action_id] = action
        return action

    def modify_scheduled_action(self, region: str, p: dict[str, Any]) -> ScheduledAction:
        action = self.scheduled_action(region, p["ScheduledActionId"])
        draft = action.model_copy(deep=True)
        self._update(draft, p, new=False)
        self.state.scheduled_actions[action.scheduled_action_id] = draft
        return draft

    def delete_scheduled_action(self, region: str, action_id: str) -> None:
        del self.state.scheduled_actions[self.scheduled_action(region, action_id).scheduled_action_id]

    def _update(self, action: ScheduledAction, p: dict[str, Any], new: bool) -> None:
        if "ScheduledActionName" in p:
            name = check_name("ScheduledActionName", p["ScheduledActionName"], NAME_BYTES)
            if any(
                a.name == name and a.group_id == action.group_id and a.scheduled_action_id != action.scheduled_action_id
                for a in self.state.scheduled_actions.values()
            ):
                raise ApiError(
                    "InvalidParameterValue.ScheduledActionNameDuplicate",
                    f"The group already has a scheduled action named `{name}`.",
                )
            action.name = name
        action.min_size = p.get("MinSize", action.min_size)
        action.max_size = p.get("MaxSize", action.max_size)
        action.desired = p.get("DesiredCapacity", action.desired)
        check_sizes(action.min_size, action.max_size, action.desired)
        if "DisableUpdateDesiredCapacity" in p:
            action.disable_update_desired = bool(p["DisableUpdateDesiredCapacity"])
        timing = {"StartTime", "EndTime", "Recurrence"} & set(p)
        if not (new or timing):
            return
        action.start_time = p.get("StartTime", action.start_time)
        action.end_time = p.get("EndTime", action.end_time) or ""
        action.recurrence = p.get("Recurrence", action.recurrence) or ""
        start = parse_beijing("StartTime", action.start_time)
        now = self.cloud.clock.now()
        if start < now and (new or "StartTime" in p):
            raise ApiError(
                "InvalidParameterValue.StartTimeBeforeCurrentTime",
                f"StartTime `{action.start_time}` is before the current time.",
            )
        if bool(action.end_time) != bool(action.recurrence):
            raise ApiError("InvalidParameter.Conflict", "Recurrence and EndTime must be given together.")
        if action.recurrence:
            Cron(action.recurrence)
            end = parse_beijing("EndTime", action.end_time)
            if end <= start:
                raise ApiError(
                    "InvalidParameterValue.EndTimeBeforeStartTime",
                    f"EndTime `{action.end_time}` is not after StartTime.",
                )
        action.next_at = start if start >= now else self._following(action, now)

    def _following(self, action: ScheduledAction, after: float) -> float | None:
        if not action.recurrence:
            return None
        upcoming = Cron(action.recurrence).next_after(after)
        end = parse_beijing("EndTime", action.end_time)
        return upcoming if upcoming is not None and upcoming <= end else None

    def fire_schedules(self, now: float) -> float | None:
        # a clock jump over several actions fires each once, in the order of their last occurrence up to now, so
        # the group ends with the sizes of the one that fired last (as the cloud, firing each at its time, does)
        due = [a for a in self.state.scheduled_actions.values() if a.next_at is not None and a.next_at <= now]
        for action in sorted(due, key=lambda a: self._last_until(a, now)):
            group = self.state.groups.get(action.group_id)
            if group is not None and group.enabled:
                self._fire(action, group)
            action.next_at = self._following(action, now)
        upcoming = [a.next_at for a in self.state.scheduled_actions.values() if a.next_at is not None]
        return min(upcoming) if upcoming else None

    def _last_until(self, action: ScheduledAction, now: float) -> float:
        """The action's latest occurrence at or before `now` (it is due: its next_at is one)."""
        assert action.next_at is not None
        last = action.next_at
        while (following := self._following(action, last)) is not None and following <= now:
            last = following
        return last

    def _fire(self, action: ScheduledAction, group: AutoScalingGroup) -> None:
        action.fired += 1
        group.min_size, group.max_size = action.min_size, action.max_size
        desired = group.desired if action.disable_update_desired else action.desired
        group.desired = min(max(desired, group.min_size), group.max_size)
        group.retry_blocked, group.failures, group.retry_at = False, 0, None
        group.cause = (
            f"Activity was launched in response to the scheduled action {action.name} ({action.scheduled_action_id}), "
            f"which set MinSize {group.min_size}, MaxSize {group.max_size}, DesiredCapacity {group.desired}."
        )
