"""Which instances belong to a group, by a user's hand: scale out / in by a number, attach, detach, remove,
protect from scale-in. Each call that changes membership opens its activity at once (and returns its id)."""

from typing import TYPE_CHECKING

from sandbox.autoscaling.activities import user_cause
from sandbox.autoscaling.common import check_id, cvm_of
from sandbox.autoscaling.models import Activity, AsState, AutoScalingGroup, GroupInstance, Work
from sandbox.core.errors import ApiError

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

MAX_IDS = 100
ATTACHABLE = ("RUNNING", "STOPPED")


class MembershipRules:
    state: AsState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def group(self, region: str, group_id: str) -> AutoScalingGroup: ...
        def check_idle(self, group: AutoScalingGroup, code: str = ...) -> None: ...
        def check_enabled(self, group: AutoScalingGroup) -> None: ...
        def open_activity(
            self, group: AutoScalingGroup, activity_type: str, cause: str, work: list[Work], count: int | None = None
        ) -> Activity: ...
        def scale_in_candidates(self, group: AutoScalingGroup, count: int) -> list[GroupInstance]: ...
        def leaving(self, group: AutoScalingGroup, instances: list[GroupInstance], terminate: bool) -> list[Work]: ...
        def _subnets(self, group: AutoScalingGroup, count: int) -> list[str]: ...

    def _busy_group(self, region: str, group_id: str) -> AutoScalingGroup:
        group = self.group(region, group_id)
        self.check_enabled(group)
        self.check_idle(group)
        return group

    def scale_out(self, region: str, group_id: str, count: int) -> Activity:
        group = self._busy_group(region, group_id)
        if count < 1:
            raise ApiError("InvalidParameterValue.Range", "ScaleOutNumber must be at least 1.")
        if group.desired + count > group.max_size:
            raise ApiError(
                "ResourceInsufficient.AutoScalingGroupAboveMaxSize",
                f"Scaling out {count} would take the group above its MaxSize ({group.max_size}).",
            )
        group.desired += count
        group.retry_blocked, group.failures, group.retry_at = False, 0, None
        cause = user_cause("ScaleOutInstances", f"scale out {count} instance(s)")
        work = [Work(step="launch", subnet_id=s) for s in self._subnets(group, count)]
        return self.open_activity(group, "SCALE_OUT", cause, work)

    def scale_in(self, region: str, group_id: str, count: int) -> Activity:
        group = self._busy_group(region, group_id)
        if count < 1:
            raise ApiError("InvalidParameterValue.Range", "ScaleInNumber must be at least 1.")
        if group.desired - count < group.min_size:
            raise ApiError(
                "ResourceInsufficient.AutoScalingGroupBelowMinSize",
                f"Scaling in {count} would take the group below its MinSize ({group.min_size}).",
            )
        chosen = self.scale_in_candidates(group, count)
        if not chosen:
            raise ApiError("FailedOperation.NoActivityToGenerate", "No instance can be scaled in (all are protected).")
        group.desired -= count
        cause = user_cause("ScaleInInstances", f"scale in {count} instance(s)")
        return self.open_activity(group, "SCALE_IN", cause, self.leaving(group, chosen, terminate=True))

    def attach(self, region: str, group_id: str, instance_ids: list[str]) -> Activity:
        group = self.group(region, group_id)
        self.check_idle(group)
        ids = self._ids(instance_ids)
        cvm = cvm_of(self.cloud)
        missing = [i for i in ids if (x := cvm.state.instances.get(i)) is None or x.region != region]
        if missing:
            raise ApiError("ResourceNotFound.InstancesNotFound", f"The instance(s) {', '.join(missing)} do not exist.")
        for instance_id in ids:
            instance = cvm.state.instances[instance_id]
            if instance.vpc_id != group.vpc_id:
                raise ApiError(
                    "ResourceUnavailable.CvmVpcInconsistent",
                    f"The instance `{instance_id}` is in `{instance.vpc_id}`, the group in `{group.vpc_id}`.",
                )
            if instance.state not in ATTACHABLE:
                raise ApiError(
                    "ResourceUnavailable.InstanceCannotAttach",
                    f"The instance `{instance_id}` is {instance.state}: only RUNNING or STOPPED instances can attach.",
                )
            owner = next((g for g in self.state.groups.values() if instance_id in g.instances), None)
            if owner is not None:
                raise ApiError(
                    "ResourceUnavailable.InstancesAlreadyInAutoScalingGroup",
                    f"The instance `{instance_id}` is already in the scaling group `{owner.group_id}`.",
                )
        if len(group.instances) + len(ids) > group.max_size:
            raise ApiError(
                "ResourceInsufficient.AutoScalingGroupAboveMaxSize",
                f"Attaching {len(ids)} instance(s) would take the group above its MaxSize ({group.max_size}).",
            )
        now, work = self.cloud.clock.now(), []
        lc_id = group.launch_configuration_id
        lc = self.state.launch_configurations.get(lc_id)
        for instance_id in ids:
            instance = cvm.state.instances[instance_id]
            register = bool(group.forward_lbs) and instance.state == "RUNNING"
            group.instances[instance_id] = GroupInstance(
                instance_id=instance_id,
                group_id=group.group_id,
                launch_configuration_id=lc_id,
                zone=instance.zone,
                instance_type=instance.instance_type,
                creation_type="MANUAL_ATTACHING",
                life_cycle_state="ATTACHING_LB" if register else "ATTACHING",
                add_time=self.cloud.clock.iso(now),
                added_at=now,
                version_number=lc.version_number if lc else 1,
            )
            work.append(Work(instance_id=instance_id, step="register" if register else "attached"))
        group.desired = min(group.max_size, max(group.desired, len(group.instances)))
        cause = user_cause("AttachInstances", ", ".join(ids))
        return self.open_activity(group, "ATTACH_INSTANCES", cause, work)

    def detach(self, region: str, group_id: str, instance_ids: list[str], remove: bool) -> Activity:
        """DetachInstances (`remove` False) or RemoveInstances (True: what the group created is terminated)."""
        group = self.group(region, group_id)
        self.check_idle(group)
        members = self._members(group, instance_ids)
        if not remove and len(group.instances) - len(members) < group.min_size:
            raise ApiError(
                "ResourceInsufficient.AutoScalingGroupBelowMinSize",
                f"Detaching {len(members)} instance(s) would take the group below its MinSize ({group.min_size}).",
            )
        for member in members:
            if member.life_cycle_state != "IN_SERVICE":
                raise ApiError(
                    "ResourceUnavailable.InstanceInOperation",
                    f"The instance `{member.instance_id}` is {member.life_cycle_state}.",
                )
        group.desired = max(0, group.desired - len(members))
        group.min_size = min(group.min_size, group.desired)
        action = "RemoveInstances" if remove else "DetachInstances"
        cause = user_cause(action, ", ".join(m.instance_id for m in members))
        kind = "REMOVE_INSTANCES" if remove else "DETACH_INSTANCES"
        return self.open_activity(group, kind, cause, self.leaving(group, members, terminate=remove))

    def set_protection(self, region: str, group_id: str, instance_ids: list[str], protected: bool) -> None:
        group = self.group(region, group_id)
        for member in self._members(group, instance_ids):
            member.protected = protected

    def _ids(self, instance_ids: list[str]) -> list[str]:
        if not instance_ids:
            raise ApiError("MissingParameter", "InstanceIds must list at least one instance.")
        if len(instance_ids) > MAX_IDS:
            raise ApiError("InvalidParameterValue.LimitExceeded", f"At most {MAX_IDS} instance ids per request.")
        return [check_id("ins", i) for i in dict.fromkeys(instance_ids)]

    def _members(self, group: AutoScalingGroup, instance_ids: list[str]) -> list[GroupInstance]:
        ids = self._ids(instance_ids)
        outside = [i for i in ids if i not in group.instances]
        if outside:
            raise ApiError(
                "ResourceNotFound.InstancesNotInAutoScalingGroup",
                f"The instance(s) {', '.join(outside)} are not in the scaling group `{group.group_id}`.",
            )
        return [group.instances[i] for i in ids]
