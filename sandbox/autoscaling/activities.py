"""Scaling activities: how one is opened, how it ends, and the texts it shows (Cause, Description, status).

The texts follow the real API's English. The one the real API documents verbatim is the reconciliation
cause ("Activity was launched in response to a difference between desired capacity and actual capacity.")
and its description ("..., scale out 1 instance(s)."); the others keep that style and name what triggered
the activity (a user call, a scheduled action, an alarm policy).
"""

from typing import TYPE_CHECKING

from sandbox.autoscaling.models import Activity, AsState, AutoScalingGroup, Work
from sandbox.core.ids import new_id

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

DIFFERENCE = "Activity was launched in response to a difference between desired capacity and actual capacity."
RETRY_INTERVALS = (60, 120, 240, 480, 960, 1920, 3600)  # INCREMENTAL_INTERVALS: seconds after each failure
IMMEDIATE_RETRIES = 5  # IMMEDIATE_RETRY gives up after this many consecutive failures
KEEP_ACTIVITIES = 5000  # finished activities kept (oldest forgotten first)

VERBS = {
    "SCALE_OUT": "scale out",
    "SCALE_IN": "scale in",
    "ATTACH_INSTANCES": "attach",
    "DETACH_INSTANCES": "detach",
    "REMOVE_INSTANCES": "remove",
    "TERMINATE_INSTANCES_UNEXPECTEDLY": "remove",
}


def description(activity_type: str, count: int, instance_ids: list[str] | None = None) -> str:
    if activity_type in ("SCALE_OUT", "SCALE_IN"):
        return f"{DIFFERENCE[:-1]}, {VERBS[activity_type]} {count} instance(s)."
    listed = f": {', '.join(instance_ids)}" if instance_ids else ""
    return f"{VERBS[activity_type].capitalize()} {count} instance(s){listed}."


def user_cause(action: str, detail: str) -> str:
    return f"Activity was launched in response to a user request ({action}{': ' + detail if detail else ''})."


class ActivityRules:
    state: AsState
    cloud: "Cloud"

    def open_activity(
        self, group: AutoScalingGroup, activity_type: str, cause: str, work: list[Work], count: int | None = None
    ) -> Activity:
        now = self.cloud.clock.now()
        ids = [w.instance_id for w in work if w.instance_id]
        activity = Activity(
            activity_id=new_id("asa"),
            group_id=group.group_id,
            region=group.region,
            activity_type=activity_type,
            cause=cause,
            description=description(activity_type, len(work) if count is None else count, ids),
            created_time=self.cloud.clock.iso(now),
            created_at=now,
            work=work,
        )
        self.state.activities[activity.activity_id] = activity
        self._forget_old_activities()
        return activity

    def begin(self, activity: Activity) -> None:
        activity.status_code = "RUNNING"
        activity.start_time = self.cloud.clock.iso()

    def end(self, activity: Activity, group: AutoScalingGroup | None) -> None:
        """Every work item is done or failed: the activity's outcome, and the group's retry policy after a launch."""
        failed = [w for w in activity.work if w.step == "failed"]
        done = [w for w in activity.work if w.step == "done"]
        if not failed:
            activity.status_code, activity.status_message = "SUCCESSFUL", "Success"
            activity.status_message_simplified = "Success"
        else:
            activity.status_code = "FAILED" if not done else "PARTIALLY_SUCCESSFUL"
            verb = VERBS.get(activity.activity_type, "process")
            reasons = "; ".join(dict.fromkeys(w.message for w in failed))
            activity.status_message = f"Failed to {verb} {len(failed)} of {len(activity.work)} instance(s): {reasons}"
            activity.status_message_simplified = f"Failed to {verb} instance(s)."
        activity.end_time = self.cloud.clock.iso()
        if group is None or activity.activity_type != "SCALE_OUT":
            return
        if not failed:
            group.failures, group.retry_at = 0, None
            return
        group.failures += 1
        now = self.cloud.clock.now()
        if group.retry_policy == "NO_RETRY" or (
            group.retry_policy == "IMMEDIATE_RETRY" and group.failures >= IMMEDIATE_RETRIES
        ):
            group.retry_blocked = True  # until a user call (or a schedule / an alarm) changes the capacity
        elif group.retry_policy == "INCREMENTAL_INTERVALS":
            group.retry_at = now + RETRY_INTERVALS[min(group.failures, len(RETRY_INTERVALS)) - 1]
        else:
            group.retry_at = now

    def _forget_old_activities(self) -> None:
        activities = self.state.activities
        if len(activities) <= KEEP_ACTIVITIES:
            return
        finished = [a.activity_id for a in activities.values() if a.status_code not in ("INIT", "RUNNING")]
        for activity_id in finished[: len(activities) - KEEP_ACTIVITIES]:
            del activities[activity_id]


def related_status(work: Work, activity: Activity) -> str:
    if work.step == "done":
        return "SUCCESSFUL"
    if work.step == "failed":
        return "FAILED"
    return "INIT" if activity.status_code == "INIT" else "RUNNING"
