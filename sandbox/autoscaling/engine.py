"""The Auto Scaling engine: reconciles each group's capacity on the sandbox clock, one activity at a time.

`advance(now)` (called by `Cloud.advance` like every backend's) steps the running activity of each
group and, when a group is idle, enabled and not held back by its RetryPolicy, opens a new one for
the difference between desired and actual capacity. Each instance of an activity goes through steps:

- launch: `CvmBackend.run_instances` from the launch configuration into the group's subnets (a fault
  rule on cvm RunInstances applies: `error_code` fails the launch at once, `async_failure` ends the
  instance LAUNCH_FAILED), then wait for RUNNING (LAUNCH_FAILED: the instance is terminated, the work fails);
- register: `ClbBackend.register_targets` on every ForwardLoadBalancer listener (one call per listener
  for every instance waiting; a CLB busy with another task is retried later), then wait for the CLB
  tasks: only then is the instance IN_SERVICE;
- deregister (scale in, detach, remove), then terminate (what the group created) and wait until it is gone.

The engine waits on other backends' clocks, so `advance` returns when they are due (or now, after a
change), never a fixed poll interval.
"""

import contextlib
from typing import TYPE_CHECKING, Any

from sandbox.autoscaling.activities import DIFFERENCE
from sandbox.autoscaling.common import clb_of, cvm_of, vpc_of
from sandbox.autoscaling.models import Activity, AsState, AutoScalingGroup, GroupInstance, Work
from sandbox.core.errors import ApiError
from sandbox.core.ids import request_id
from sandbox.cvm.launch import LaunchSpec

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

Due = float | None
NOT_COUNTED = ("TERMINATING", "DETACHING", "REMOVING")


def earliest(*dues: Due) -> Due:
    known = [d for d in dues if d is not None]
    return min(known) if known else None


class EngineRules:
    state: AsState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def open_activity(
            self, group: AutoScalingGroup, activity_type: str, cause: str, work: list[Work], count: int | None = None
        ) -> Activity: ...
        def begin(self, activity: Activity) -> None: ...
        def end(self, activity: Activity, group: AutoScalingGroup | None) -> None: ...
        def timers(self, now: float) -> Due: ...  # schedules and policies (`ScheduleRules`, `PolicyRules`)
        def _register(self, activity: Activity, group: AutoScalingGroup) -> None: ...  # `BindingRules`
        def _deregister(self, activity: Activity, group: AutoScalingGroup) -> None: ...

    def advance(self, now: float) -> Due:
        due: Due = self.timers(now)
        for activity in [a for a in self.state.activities.values() if a.status_code in ("INIT", "RUNNING")]:
            due = earliest(due, self._step(activity, now))
        busy: dict[str, set[str]] = {}  # group id -> the instances its running activity works on
        for activity in self.state.activities.values():
            if activity.status_code in ("INIT", "RUNNING"):
                busy.setdefault(activity.group_id, set()).update(w.instance_id or "" for w in activity.work)
        for group in list(self.state.groups.values()):
            due = earliest(due, self._reconcile(group, now, busy.get(group.group_id)))
        return due

    # ---- reconciliation ------------------------------------------------------------------------------
    def _reconcile(self, group: AutoScalingGroup, now: float, busy: set[str] | None) -> Due:
        watch = self._forget_vanished(group, busy or set(), now)
        if not group.enabled or group.retry_blocked or busy is not None:
            return watch
        if group.retry_at is not None and group.retry_at > now:
            return earliest(watch, group.retry_at)
        cause, group.cause = group.cause or DIFFERENCE, None
        return now if self.open_reconciliation(group, cause) else watch

    def open_reconciliation(self, group: AutoScalingGroup, cause: str) -> Activity | None:
        """The activity that brings the group's instances to its desired capacity (None: nothing to do)."""
        actual = len(group.instances)
        if group.desired > actual:
            subnets = self._subnets(group, group.desired - actual)
            return self.open_activity(group, "SCALE_OUT", cause, [Work(step="launch", subnet_id=s) for s in subnets])
        if group.desired < actual:
            chosen = self.scale_in_candidates(group, actual - group.desired)
            if chosen:
                return self.open_activity(group, "SCALE_IN", cause, self.leaving(group, chosen, terminate=True))
        return None

    def scale_in_candidates(self, group: AutoScalingGroup, count: int) -> list[GroupInstance]:
        """By the termination policy, never a protected instance, only instances in service."""
        ready = [i for i in group.instances.values() if not i.protected and i.life_cycle_state == "IN_SERVICE"]
        ready.sort(key=lambda i: i.added_at, reverse=group.termination_policy == "NEWEST_INSTANCE")
        return ready[:count]

    def leaving(self, group: AutoScalingGroup, instances: list[GroupInstance], terminate: bool) -> list[Work]:
        """Work for instances leaving the group: deregister, then terminate those the group created (if asked)."""
        work = []
        for instance in instances:
            kill = terminate and instance.creation_type == "AUTO_CREATION"
            instance.life_cycle_state = (
                "DETACHING_LB" if group.forward_lbs else ("TERMINATING" if kill else "DETACHING")
            )
            work.append(Work(instance_id=instance.instance_id, step="deregister", terminate_after=kill, release=True))
        return work

    def _subnets(self, group: AutoScalingGroup, count: int) -> list[str]:
        """PRIORITY: the first subnet with room; EQUALITY: spread over the subnets, fewest instances first."""
        vpc = vpc_of(self.cloud)
        usable = [s for s in group.subnet_ids if s in vpc.state.subnets and vpc.state.subnets[s].available_ip_count]
        usable = usable or list(group.subnet_ids)
        if group.multi_zone_subnet_policy == "PRIORITY":
            return [usable[0]] * count
        cvm = cvm_of(self.cloud)
        load = {s: 0 for s in usable}
        for instance in group.instances.values():
            found = cvm.state.instances.get(instance.instance_id)
            if found is not None and found.subnet_id in load:
                load[found.subnet_id] += 1
        chosen = []
        for _ in range(count):
            subnet = min(usable, key=lambda s: load[s])
            load[subnet] += 1
            chosen.append(subnet)
        return chosen

    def _forget_vanished(self, group: AutoScalingGroup, busy: set[str], now: float) -> Due:
        """An instance terminated outside Auto Scaling leaves the group (the real service records it too).

        Returns when a member's pending CVM transition (a TerminateInstances by hand) is due, so that the
        engine looks again then: the CVM backend may complete it after this backend's pass."""
        instances = cvm_of(self.cloud).state.instances
        gone = [i for i in group.instances if i not in busy and i not in instances]
        pending = [x.pending_at for i in group.instances if i not in busy and (x := instances.get(i)) and x.pending_at]
        watch = max(now, min(pending)) if pending else None
        if not gone:
            return watch
        for instance_id in gone:
            del group.instances[instance_id]
        cause = "Activity was launched in response to instance(s) terminated outside Auto Scaling."
        activity = self.open_activity(
            group, "TERMINATE_INSTANCES_UNEXPECTEDLY", cause, [Work(instance_id=i, step="done") for i in gone]
        )
        self.begin(activity)
        self.end(activity, group)
        return now

    # ---- stepping an activity ------------------------------------------------------------------------
    def _step(self, activity: Activity, now: float) -> Due:
        group = self.state.groups.get(activity.group_id)
        if activity.status_code == "INIT":
            self.begin(activity)
        if group is None:
            for work in activity.work:
                if work.step not in ("done", "failed"):
                    work.step, work.message = "failed", "the scaling group was deleted"
        else:
            self._launch(activity, group)
            self._register(activity, group)
            self._deregister(activity, group)
            for work in activity.work:
                self._progress(work, activity, group)
        if all(w.step in ("done", "failed") for w in activity.work):
            self.end(activity, group)
            return now
        return earliest(*(self._waits_until(w, now) for w in activity.work))

    def _waits_until(self, work: Work, now: float) -> Due:
        if work.step in ("done", "failed"):
            return None
        if work.step in ("wait_running", "wait_terminated") and work.instance_id:
            instance = cvm_of(self.cloud).state.instances.get(work.instance_id)
            pending = instance.pending_at if instance is not None else None
            return max(now, pending) if pending is not None else now
        if work.tasks or work.step in ("register", "deregister"):
            tasks = clb_of(self.cloud).state.tasks
            dues = [tasks[t].done_at for t in work.tasks if t in tasks and tasks[t].status == 2]
            running = [t.done_at for t in tasks.values() if t.status == 2]  # a busy CLB frees up then
            return max(now, min(dues or running or [now]))
        return now

    def _launch(self, activity: Activity, group: AutoScalingGroup) -> None:
        waiting = [w for w in activity.work if w.step == "launch"]
        if not waiting:
            return
        lc = self.state.launch_configurations.get(group.launch_configuration_id)
        cvm, vpc = cvm_of(self.cloud), vpc_of(self.cloud)
        by_subnet: dict[str, list[Work]] = {}
        for work in waiting:
            by_subnet.setdefault(work.subnet_id or group.subnet_ids[0], []).append(work)
        for subnet_id, works in by_subnet.items():
            subnet = vpc.state.subnets.get(subnet_id)
            try:
                if lc is None or subnet is None:
                    raise ApiError("ResourceNotFound", "the launch configuration or subnet no longer exists")
                failure = self._launch_fault()
                ids = cvm.run_instances(
                    group.region, self._spec(group, lc, subnet), len(works), request_id(), async_failure=failure
                )
            except ApiError as error:
                for work in works:
                    work.step, work.message = "failed", f"{error.code}: {error.message}"
                    activity.detailed.append(self._detail(error, subnet_id, lc, subnet.zone if subnet else ""))
                continue
            now = self.cloud.clock.now()
            for work, instance_id in zip(works, ids, strict=True):
                instance = cvm.state.instances[instance_id]
                if lc.password_hash and not lc.key_ids:
                    instance.password_hash = lc.password_hash
                if lc.instance_name and lc.instance_name_style == "ORIGINAL":
                    instance.instance_name = lc.instance_name
                work.instance_id, work.step = instance_id, "wait_running"
                group.instances[instance_id] = GroupInstance(
                    instance_id=instance_id,
                    group_id=group.group_id,
                    launch_configuration_id=lc.launch_configuration_id,
                    zone=instance.zone,
                    instance_type=instance.instance_type,
                    creation_type="AUTO_CREATION",
                    life_cycle_state="CREATING",
                    add_time=self.cloud.clock.iso(now),
                    added_at=now,
                    version_number=lc.version_number,
                )

    def _launch_fault(self) -> str | None:
        """Fault rules on cvm RunInstances apply to the group's launches as to a user's RunInstances."""
        failure = None
        for rule in self.cloud.faults.pick("cvm", "RunInstances"):
            if rule.error_code or rule.http_status:
                raise ApiError(rule.error_code or "InternalError.CallCvmError", rule.error_message)
            failure = rule.async_failure or failure
        return failure

    def _spec(self, group: AutoScalingGroup, lc: Any, subnet: Any) -> LaunchSpec:
        return LaunchSpec(
            zone=subnet.zone,
            project_id=group.project_id,
            image_id=lc.image_id,
            instance_type=lc.instance_types[0],
            instance_name=lc.instance_name or f"as-{group.name}",
            charge_type="SPOTPAID" if lc.instance_charge_type == "SPOTPAID" else "POSTPAID_BY_HOUR",
            vpc_id=group.vpc_id,
            subnet_id=subnet.subnet_id,
            security_group_ids=lc.security_group_ids or None,
            key_ids=list(lc.key_ids),
            keep_image_login=lc.keep_image_login,
            bandwidth_out=lc.bandwidth_out,
            internet_charge_type=lc.internet_charge_type,
            public_ip_assigned=lc.public_ip_assigned if lc.bandwidth_out else None,
            tags=dict(lc.instance_tags),
            host_name=lc.host_name,
            system_disk_type=str(lc.system_disk.get("DiskType", "CLOUD_PREMIUM")),
            system_disk_size=int(lc.system_disk.get("DiskSize", 50)),  # type: ignore[call-overload]
        )

    def _detail(self, error: ApiError, subnet_id: str, lc: Any, zone: str) -> dict[str, str]:
        return {
            "Code": error.code,
            "Zone": zone,
            "InstanceId": "",
            "SubnetId": subnet_id,
            "Message": error.message,
            "InstanceChargeType": lc.instance_charge_type if lc else "",
            "InstanceType": lc.instance_types[0] if lc else "",
        }

    def _progress(self, work: Work, activity: Activity, group: AutoScalingGroup) -> None:
        """The steps that only look at state: waiting for an instance or for CLB tasks."""
        cvm = cvm_of(self.cloud)
        member = group.instances.get(work.instance_id or "")
        instance = cvm.state.instances.get(work.instance_id or "")
        if work.step == "wait_running":
            if instance is None:
                self._fail(work, group, "the instance no longer exists")
            elif instance.state == "LAUNCH_FAILED":
                self._fail(work, group, instance.latest_operation_error_msg or "the instance failed to launch")
            elif instance.state == "RUNNING":
                work.step = "register" if group.forward_lbs else "done"
                if member is not None:
                    member.life_cycle_state = "ATTACHING_LB" if group.forward_lbs else "IN_SERVICE"
        elif work.step in ("wait_register", "wait_deregister"):
            tasks = clb_of(self.cloud).state.tasks
            states = [tasks[t].status if t in tasks else 0 for t in work.tasks]
            if 2 in states:
                return
            failed = [tasks[t].message or "CLB task failed" for t in work.tasks if t in tasks and tasks[t].status == 1]
            work.tasks = []
            if work.step == "wait_register":
                if failed:
                    self._fail(work, group, f"registering on the load balancer failed: {failed[0]}")
                else:
                    work.step = "done"
                    if member is not None:
                        member.life_cycle_state = "IN_SERVICE"
            else:
                work.step = "terminate" if work.terminate_after else "done"
        if work.step == "attached":  # attached without a load balancer to join (none, or the server is STOPPED)
            work.step = "done"
            if member is not None:
                member.life_cycle_state = "IN_SERVICE"
        if work.step == "terminate":
            if member is not None:
                member.life_cycle_state = "TERMINATING"
            work.step = "wait_terminated"
            self._terminate(group, work.instance_id or "")
        elif work.step == "wait_terminated":
            if instance is None:
                work.step = "done"
            else:
                self._terminate(group, instance.instance_id)
        if work.step == "done" and work.release:
            group.instances.pop(work.instance_id or "", None)

    def _fail(self, work: Work, group: AutoScalingGroup, message: str) -> None:
        """A joining instance that could not join leaves the group: terminated if the group made it, else let go."""
        work.step, work.message = "failed", message
        member = group.instances.get(work.instance_id or "")
        if member is None or work.release:
            return
        del group.instances[member.instance_id]
        if member.creation_type == "AUTO_CREATION":
            self._terminate(group, member.instance_id)
        else:
            group.desired = max(group.min_size, group.desired - 1)

    def _terminate(self, group: AutoScalingGroup, instance_id: str) -> None:
        cvm = cvm_of(self.cloud)
        instance = cvm.state.instances.get(instance_id)
        if instance is None or instance.state == "TERMINATING":
            return
        with contextlib.suppress(ApiError):  # PENDING, STOPPING ...: `wait_terminated` tries again on the next pass
            cvm.terminate_instances(group.region, [instance_id], request_id(), None)
