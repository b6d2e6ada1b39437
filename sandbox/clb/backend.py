"""CLB rules: load balancers and their asynchronous tasks (listener and target rules: `sandbox.clb.listeners`).

Every write is a task (TaskId = the write's RequestId; creation also has a DealName) that runs
from now until `clock.due("clb.task")` (`"clb.create"` for creation). Listener and target changes
are visible at once, as on the real cloud; a task ended by an `async_failure` fault puts the load
balancer back as it was before the write. While a task runs (or the load balancer is still
Status 0) every other write to it is refused with `FailedOperation.ResourceInOperating`.
Deletion takes effect when its task completes.

Methods other services call: `load_balancer(region, id)`, `load_balancers(region)`,
`targets_of_instance(instance_id)`, `set_target_health(lb_id, listener_id, instance_id, port, healthy)`,
`register_targets(...)` / `deregister_targets(...)` (Auto Scaling).

Events: `clb.changed(load_balancer)` after any change to an LB's status, listeners or targets;
`clb.deleted(load_balancer)` when an LB is gone. The data plane reconciles its forwarders on them.
A TERMINATED instance (`instance.state`) is unbound everywhere; a stopped one stays registered.
"""

import secrets
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sandbox.clb.listeners import TRANSPORT, ListenerRules, default_health_check
from sandbox.clb.models import ClbState, HealthCheck, Listener, LoadBalancer, Target, Task
from sandbox.core.backend import Backend, backend
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud, Events

__all__ = [
    "TRANSPORT",
    "ClbBackend",
    "ClbState",
    "HealthCheck",
    "Listener",
    "LoadBalancer",
    "Target",
    "Task",
    "default_health_check",
]

# Internal task names, as the real API names them in `Your task is working (...)`.
OPERATIONS = {
    "CreateLoadBalancer": "CreateQLB",
    "DeleteLoadBalancer": "DelQLB",
    "CreateListener": "CreateQLBListener",
    "DeleteListener": "DelQLBListener",
    "RegisterTargets": "BindQLBL4ListenerDevice",
    "DeregisterTargets": "DelQLBL4ListenerDevice",
}
QUOTA = 100  # load balancers of each type (OPEN / INTERNAL) per region, the real default quota
KEEP_TASKS = 2000  # finished tasks kept for DescribeTaskStatus; older ones are forgotten
_SUBSCRIBED: "weakref.WeakSet[Events]" = weakref.WeakSet()


def _current(cloud: "Cloud") -> "ClbBackend":
    return cloud.backends["clb"]  # type: ignore[return-value]


@backend
class ClbBackend(ListenerRules, Backend):
    service = "clb"
    state_model = ClbState
    state: ClbState

    def __init__(self, cloud: "Cloud") -> None:
        super().__init__(cloud)
        # Events outlive a reset (which rebuilds every backend): subscribe once per cloud, and reach
        # whichever CLB backend is current when an instance changes.
        if cloud.events not in _SUBSCRIBED:
            _SUBSCRIBED.add(cloud.events)
            cloud.events.subscribe("instance.state", lambda instance: _current(cloud).on_instance_state(instance))

    def on_instance_state(self, instance: Any) -> None:
        """A terminated server is unbound everywhere; a stopped one stays bound (unhealthy), as on the real CLB."""
        if instance.state == "TERMINATED":
            self.forget_instance(instance.instance_id)

    # ---- lookups other services call --------------------------------------------------------------
    def load_balancer(self, region: str, lb_id: str) -> LoadBalancer:
        lb = self.state.load_balancers.get(lb_id)
        if lb is None or lb.region != region:
            raise ApiError("InvalidParameter.LBIdNotFound", f"LoadBalancer ids [{lb_id}] not found.")
        return lb

    def load_balancers(self, region: str) -> list[LoadBalancer]:
        return [lb for lb in self.state.load_balancers.values() if lb.region == region]

    def listener(self, lb: LoadBalancer, listener_id: str) -> Listener:
        listener = lb.listeners.get(listener_id)
        if listener is None:
            raise ApiError(
                "InvalidParameter.ListenerIdNotFound",
                f"Listener `{listener_id}` not found in LoadBalancer `{lb.load_balancer_id}`.",
            )
        return listener

    def targets_of_instance(self, instance_id: str) -> list[tuple[LoadBalancer, Listener, Target]]:
        """Every (load balancer, listener, target) an instance is registered on, in every region."""
        return [
            (lb, listener, target)
            for lb in self.state.load_balancers.values()
            for listener in lb.listeners.values()
            for target in listener.targets
            if target.instance_id == instance_id
        ]

    def set_target_health(self, lb_id: str, listener_id: str, instance_id: str, port: int, healthy: bool) -> bool:
        """The data plane's health checker reports a probe result; False when no such target exists."""
        lb = self.state.load_balancers.get(lb_id)
        listener = lb.listeners.get(listener_id) if lb else None
        for target in listener.targets if listener else []:
            if target.instance_id == instance_id and target.port == port:
                if target.healthy is not healthy:
                    target.healthy = healthy
                    self.cloud.touched()
                return True
        return False

    def forget_instance(self, instance_id: str) -> None:
        """A terminated instance is unbound from every listener, as the real CLB does."""
        changed = {id(lb): lb for lb, _, _ in self.targets_of_instance(instance_id)}
        snapshots = [t.before for t in self.state.tasks.values() if t.status == 2 and t.before is not None]
        for lb in [*changed.values(), *snapshots]:  # a failing task must not bring the server back either
            for listener in lb.listeners.values():
                listener.targets = [t for t in listener.targets if t.instance_id != instance_id]
        for lb in changed.values():
            self.cloud.events.emit("clb.changed", lb)

    # ---- tasks ------------------------------------------------------------------------------------
    def check_writable(self, lb: LoadBalancer) -> None:
        """One write at a time per load balancer, as the real CLB enforces."""
        if lb.status == 0:
            raise ApiError(
                "FailedOperation.ResourceInOperating",
                f"Loadbalancer({lb.load_balancer_id}) is not in normal desState, "
                "maybe some tasks are being processed, please try later.",
            )
        task = self.state.tasks.get(lb.running_task or "")
        if task is not None and task.status == 2:
            raise ApiError(
                "FailedOperation.ResourceInOperating",
                f"Your task is working ({task.operation}). Pls wait for the task to complete and try again.",
            )

    def start_task(
        self,
        action: str,
        task_id: str,
        lb: LoadBalancer,
        failure: str | None,
        before: LoadBalancer | None = None,
        deal_name: str | None = None,
        load_balancer_ids: list[str] | None = None,
    ) -> Task:
        operation = "clb.create" if action == "CreateLoadBalancer" else "clb.task"
        task = Task(
            task_id=task_id,
            region=lb.region,
            load_balancer_id=lb.load_balancer_id,
            deal_name=deal_name,
            done_at=self.cloud.clock.due(operation),
            failure=failure,
            action=action,
            operation=OPERATIONS[action],
            load_balancer_ids=load_balancer_ids or [lb.load_balancer_id],
            before=before,
        )
        self.state.tasks[task_id] = task
        for lb_id in task.load_balancer_ids:
            self.state.load_balancers[lb_id].running_task = task_id
        self._forget_old_tasks()
        return task

    def task(self, task_id: str | None, deal_name: str | None) -> Task:
        task = self.state.tasks.get(task_id) if task_id else None
        if task is None and deal_name:
            task = next((t for t in self.state.tasks.values() if t.deal_name == deal_name), None)
        if task is None:
            raise ApiError("ResourceNotFound", f"The task `{task_id or deal_name}` does not exist.")
        return task

    def advance(self, now: float) -> float | None:
        pending: list[float] = []
        for task in list(self.state.tasks.values()):
            if task.status != 2:
                continue
            if task.done_at <= now:
                self._finish(task)
            else:
                pending.append(task.done_at)
        return min(pending) if pending else None

    def _finish(self, task: Task) -> None:
        task.status = 1 if task.failure else 0
        task.message = task.failure
        lbs = [lb for i in task.load_balancer_ids if (lb := self.state.load_balancers.get(i)) is not None]
        for lb in lbs:
            if lb.running_task == task.task_id:
                lb.running_task = None
        if task.action == "CreateLoadBalancer":
            for lb in lbs:
                if task.failure:
                    self._remove(lb)
                else:
                    lb.status, lb.status_time = 1, self.cloud.clock.plain()
                    self.cloud.events.emit("clb.changed", lb)
        elif task.action == "DeleteLoadBalancer":
            if not task.failure:
                for lb in lbs:
                    self._remove(lb)
        elif task.failure and task.before is not None and lbs:
            self._restore(lbs[0], task.before)
        task.before = None  # the snapshot is only needed while the task runs
        self.cloud.touched()

    def _restore(self, current: LoadBalancer, before: LoadBalancer) -> None:
        """Undo a failed write; health the data plane measured meanwhile is kept."""
        health = {
            (listener_id, t.instance_id, t.port): t.healthy
            for listener_id, listener in current.listeners.items()
            for t in listener.targets
        }
        for listener_id, listener in before.listeners.items():
            for t in listener.targets:
                t.healthy = health.get((listener_id, t.instance_id, t.port), t.healthy)
        before.running_task = None
        self.state.load_balancers[current.load_balancer_id] = before
        self.cloud.events.emit("clb.changed", before)

    def _remove(self, lb: LoadBalancer) -> None:
        self.state.load_balancers.pop(lb.load_balancer_id, None)
        vpc: Any = self.cloud.backends["vpc"]
        if lb.load_balancer_type == "INTERNAL" and lb.subnet_id:
            vpc.release_ip(lb.subnet_id, lb.vip)
        else:
            vpc.release_public_ip(lb.vip)
        self.cloud.events.emit("clb.deleted", lb)

    def _forget_old_tasks(self) -> None:
        if len(self.state.tasks) <= KEEP_TASKS:
            return
        finished = [t.task_id for t in self.state.tasks.values() if t.status != 2]
        for task_id in finished[: len(self.state.tasks) - KEEP_TASKS]:
            del self.state.tasks[task_id]

    # ---- writes -------------------------------------------------------------------------------------
    def create_load_balancers(
        self,
        region: str,
        task_id: str,
        failure: str | None,
        lb_type: str,
        vpc_id: str,
        subnet_id: str | None,
        project_id: int,
        name: str | None,
        number: int,
        tags: dict[str, str],
        bandwidth_out: int,
        client_token: str | None,
    ) -> Task:
        """Create `number` load balancers in Status 0 under one task; a repeated ClientToken returns that task."""
        if client_token and client_token in self.state.client_tokens:
            return self.state.tasks[self.state.client_tokens[client_token]]
        in_quota = sum(1 for lb in self.load_balancers(region) if lb.load_balancer_type == lb_type)
        if in_quota + number > QUOTA:
            raise ApiError("LimitExceeded", f"The quota of {QUOTA} {lb_type} load balancers in {region} is reached.")
        vpc: Any = self.cloud.backends["vpc"]
        subnet = vpc.subnet(region, subnet_id) if subnet_id else None
        taken = {lb.load_balancer_name for lb in self.load_balancers(region)}
        now, created = self.cloud.clock.now(), []
        for _ in range(number):
            lb_id = new_id("lb")
            # A name is used only when creating one LB, and only if no LB has it yet; else one is made up.
            lb_name = name if (name and number == 1 and name not in taken) else lb_id
            if subnet is not None:
                try:
                    vip = vpc.allocate_ip(subnet)
                except ApiError as error:
                    raise ApiError("ResourceInsufficient", error.message) from None
            else:
                vip = vpc.allocate_public_ip()
            lb = LoadBalancer(
                load_balancer_id=lb_id,
                region=region,
                load_balancer_name=lb_name,
                load_balancer_type=lb_type,
                vpc_id=vpc_id,
                subnet_id=subnet_id,
                project_id=project_id,
                vip=vip,
                created_time=self.cloud.clock.plain(now),
                status_time=self.cloud.clock.plain(now),
                created_at=now,
                tags=dict(tags),
                bandwidth_out=bandwidth_out,
            )
            self.state.load_balancers[lb_id] = lb
            created.append(lb)
        deal_name = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d") + "".join(
            secrets.choice("0123456789") for _ in range(15)
        )
        task = self.start_task(
            "CreateLoadBalancer",
            task_id,
            created[0],
            failure,
            deal_name=deal_name,
            load_balancer_ids=[lb.load_balancer_id for lb in created],
        )
        if client_token:
            self.state.client_tokens[client_token] = task_id
        return task

    def delete_load_balancers(self, region: str, task_id: str, failure: str | None, lb_ids: list[str]) -> Task:
        lbs = [self.load_balancer(region, lb_id) for lb_id in dict.fromkeys(lb_ids)]
        for lb in lbs:
            self.check_writable(lb)
        return self.start_task(
            "DeleteLoadBalancer", task_id, lbs[0], failure, load_balancer_ids=[lb.load_balancer_id for lb in lbs]
        )

    def begin_write(self, action: str, task_id: str, lb: LoadBalancer, failure: str | None) -> Task:
        """Record a listener / target write on `lb` (checks done): snapshot first so a failure can undo it."""
        self.check_writable(lb)
        return self.start_task(action, task_id, lb, failure, before=lb.model_copy(deep=True))

    def changed(self, lb: LoadBalancer) -> None:
        self.cloud.events.emit("clb.changed", lb)
