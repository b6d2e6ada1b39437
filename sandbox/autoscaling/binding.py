"""Registering a group's instances on its CLB listeners and deregistering them (a step of the engine's activities).

One `ClbBackend.register_targets` / `deregister_targets` call per listener for every instance waiting at
that step; a CLB busy with another task (`FailedOperation.ResourceInOperating`) is tried again on the
next pass; fault rules on clb RegisterTargets apply as to a user's call.
"""

from typing import TYPE_CHECKING

from sandbox.autoscaling.common import clb_of
from sandbox.autoscaling.models import Activity, AsState, AutoScalingGroup, Work
from sandbox.clb.models import Target
from sandbox.core.errors import ApiError
from sandbox.core.ids import request_id

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud


class BindingRules:
    state: AsState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def _fail(self, work: Work, group: AutoScalingGroup, message: str) -> None: ...  # `EngineRules`

    # ---- CLB registration, batched per listener ------------------------------------------------------
    def _register(self, activity: Activity, group: AutoScalingGroup) -> None:
        self._bind(activity, group, "register")

    def _deregister(self, activity: Activity, group: AutoScalingGroup) -> None:
        self._bind(activity, group, "deregister")

    def _bind(self, activity: Activity, group: AutoScalingGroup, step: str) -> None:
        waiting = [w for w in activity.work if w.step == step]
        if not waiting:
            return
        clb = clb_of(self.cloud)
        for forward in group.forward_lbs:
            key = f"{forward.load_balancer_id}/{forward.listener_id}"
            todo = [w for w in waiting if key not in w.bound and w.step == step]
            if not todo:
                continue
            lb = clb.state.load_balancers.get(forward.load_balancer_id)
            listener = lb.listeners.get(forward.listener_id) if lb else None
            if lb is None or listener is None:
                for work in todo:
                    if step == "register":
                        self._fail(work, group, f"the listener {key} no longer exists")
                    else:
                        work.bound.append(key)
                continue
            task_id = request_id()
            bound = {(t.instance_id, t.port) for t in listener.targets}  # e.g. an attached server is already bound
            try:
                if step == "register":
                    targets = [
                        Target(instance_id=w.instance_id or "", port=port, weight=weight)
                        for w in todo
                        for port, weight in forward.targets
                        if (w.instance_id, port) not in bound
                    ]
                    if targets:
                        clb.register_targets(
                            group.region,
                            task_id,
                            self._clb_fault("RegisterTargets"),
                            lb.load_balancer_id,
                            listener.listener_id,
                            targets,
                        )
                else:
                    pairs = [(w.instance_id or "", port) for w in todo for port, _ in forward.targets]
                    pairs = [p for p in pairs if p in bound]
                    if pairs:
                        clb.deregister_targets(
                            group.region, task_id, None, lb.load_balancer_id, listener.listener_id, pairs
                        )
            except ApiError as error:
                if error.code == "FailedOperation.ResourceInOperating":
                    continue  # the CLB is busy with another task: the next pass tries again
                for work in todo:
                    if step == "register":
                        self._fail(work, group, f"{error.code}: {error.message}")
                    else:
                        work.bound.append(key)
                continue
            for work in todo:
                work.bound.append(key)
                if task_id in clb.state.tasks:
                    work.tasks.append(task_id)
        for work in waiting:
            if work.step == step and all(
                f"{f.load_balancer_id}/{f.listener_id}" in work.bound for f in group.forward_lbs
            ):
                work.step, work.bound = f"wait_{step}", []
        for work in waiting:  # nothing to deregister from: straight on
            if work.step == step and not group.forward_lbs:
                work.step = f"wait_{step}"

    def _clb_fault(self, action: str) -> str | None:
        """Fault rules on clb RegisterTargets apply to the group's registrations as to a user's call."""
        failure = None
        for rule in self.cloud.faults.pick("clb", action):
            if rule.error_code or rule.http_status:
                raise ApiError(rule.error_code or "InternalError.CallLbError", rule.error_message)
            failure = rule.async_failure or failure
        return failure
