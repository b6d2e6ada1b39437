"""Auto Scaling (as 2018-04-19) state and rules: launch configurations, scaling groups, activities, the engine,
scheduled actions, scaling policies (no HTTP here).

The rules are split by concern and mixed into `AsBackend`: `launch_configs`, `groups`, `membership`
(attach / detach / remove / protection), `activities`, `engine` (capacity reconciliation on the sandbox
clock) and `binding` (its CLB steps), `schedules`, `policies` (alarms over `sandbox.core.metrics`).
Everything is pydantic state, so activities, schedules and policies survive a restart with `--state-dir`;
launch configurations' login password hashes are left out of `dump()` (so out of `GET /_sandbox/state`)
and kept beside the state file in `as-logins.json` (mode 0600), as the CVM backend keeps its own.
"""

import json
import os
from pathlib import Path
from typing import Any

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

LOGINS_FILE = "as-logins.json"


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
    _saved_logins: dict[str, str] | None = None  # what as-logins.json holds now

    def dump(self) -> dict[str, Any]:
        self._save_logins()
        return super().dump()

    def load(self, data: dict[str, Any]) -> None:
        super().load(data)
        path = self._logins_path()
        if path is not None and path.exists():
            for lc_id, password_hash in json.loads(path.read_text()).items():
                if lc_id in self.state.launch_configurations:
                    self.state.launch_configurations[lc_id].password_hash = password_hash

    def _logins_path(self) -> Path | None:
        state_dir = self.cloud.config.state_dir
        return state_dir / LOGINS_FILE if state_dir else None

    def _save_logins(self) -> None:
        path = self._logins_path()
        logins = {i: lc.password_hash for i, lc in self.state.launch_configurations.items() if lc.password_hash}
        if path is None or logins == self._saved_logins or (not logins and not path.exists()):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            json.dump(logins, file)
        os.replace(partial, path)
        self._saved_logins = logins

    def timers(self, now: float) -> float | None:
        """Fire what is due (scheduled actions, alarm evaluations); when the next one is due."""
        dues = [d for d in (self.fire_schedules(now), self.evaluate_policies(now)) if d is not None]
        return min(dues) if dues else None
