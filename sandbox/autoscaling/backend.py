"""Auto Scaling (as 2018-04-19) state and rules: launch configurations, scaling groups, activities, the engine,
scheduled actions, scaling policies (no HTTP here).

The rules are split by concern and mixed into `AsBackend`: `launch_configs`, `groups`, `membership`
(attach / detach / remove / protection), `activities`, `engine` (capacity reconciliation on the sandbox
clock) and `binding` (its CLB steps), `schedules`, `policies` (alarms over `sandbox.core.metrics`).
Everything is pydantic state, so activities, schedules and policies survive a restart with `--state-dir`.
"""

from sandbox.autoscaling.activities import ActivityRules
from sandbox.autoscaling.binding import BindingRules
from sandbox.autoscaling.engine import EngineRules
from sandbox.autoscaling.groups import GroupRules
from sandbox.autoscaling.launch_configs import LaunchConfigRules
from sandbox.autoscaling.membership import MembershipRules
from sandbox.autoscaling.models import AsState
from sandbox.autoscaling.policies import PolicyRules
from sandbox.autoscaling.schedules import ScheduleRules
from sandbox.core.backend import Backend, backend


@backend
class AsBackend(
    LaunchConfigRules,
    GroupRules,
    MembershipRules,
    ActivityRules,
    ScheduleRules,
    PolicyRules,
    EngineRules,
    BindingRules,
    Backend,
):
    service = "as"
    state_model = AsState
    state: AsState

    def timers(self, now: float) -> float | None:
        """Fire what is due (scheduled actions, alarm evaluations); when the next one is due."""
        dues = [d for d in (self.fire_schedules(now), self.evaluate_policies(now)) if d is not None]
        return min(dues) if dues else None
