"""Scaling group rules: create, modify, delete, enable / disable, sizes, and the load balancers a group binds."""

from typing import TYPE_CHECKING, Any

from sandbox.autoscaling.common import MAX_SIZE, check_id, check_name, clb_of, in_range, one_of, tags_of, vpc_of
from sandbox.autoscaling.models import AsState, AutoScalingGroup, ForwardLb, LaunchConfiguration
from sandbox.core.catalog import PROJECTS, REGIONS
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

NAME_BYTES = 55
MAX_FORWARD_LBS = 100
TERMINATION_POLICIES = ("OLDEST_INSTANCE", "NEWEST_INSTANCE")
RETRY_POLICIES = ("IMMEDIATE_RETRY", "INCREMENTAL_INTERVALS", "NO_RETRY")
LAYER4 = ("TCP", "UDP")


class GroupRules:
    state: AsState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def launch_configuration(self, region: str, lc_id: str, code: str = ...) -> LaunchConfiguration: ...

    def group(self, region: str, group_id: str) -> AutoScalingGroup:
        check_id("asg", group_id)
        group = self.state.groups.get(group_id)
        if group is None or group.region != region:
            raise ApiError(
                "ResourceNotFound.AutoScalingGroupNotFound", f"The scaling group `{group_id}` does not exist."
            )
        return group

    def groups(self, region: str) -> list[AutoScalingGroup]:
        return [g for g in self.state.groups.values() if g.region == region]

    def in_activity(self, group: AutoScalingGroup) -> bool:
        return any(
            a.group_id == group.group_id and a.status_code in ("INIT", "RUNNING")
            for a in self.state.activities.values()
        )

    def check_idle(self, group: AutoScalingGroup, code: str = "ResourceUnavailable.AutoScalingGroupInActivity") -> None:
        if self.in_activity(group):
            raise ApiError(code, f"The scaling group `{group.group_id}` is in activity: try again when it ends.")

    def check_enabled(self, group: AutoScalingGroup) -> None:
        if not group.enabled:
            raise ApiError(
                "ResourceUnavailable.AutoScalingGroupDisabled", f"The scaling group `{group.group_id}` is disabled."
            )

    # ---- create / modify / delete ------------------------------------------------------------------
    def create_group(self, region: str, p: dict[str, Any]) -> AutoScalingGroup:
        name = self._unique_name(region, p["AutoScalingGroupName"], None)
        lc = self.launch_configuration(
            region, p["LaunchConfigurationId"], "InvalidParameterValue.LaunchConfigurationNotFound"
        )
        min_size, max_size = p["MinSize"], p["MaxSize"]
        desired = p.get("DesiredCapacity", min_size)
        check_sizes(min_size, max_size, desired)
        vpc = vpc_of(self.cloud)
        try:
            vpc.vpc(region, p["VpcId"])
        except ApiError:
            raise ApiError("InvalidParameterValue", f"The VPC `{p['VpcId']}` does not exist in {region}.") from None
        project_id = p.get("ProjectId", lc.project_id)
        if project_id not in PROJECTS:
            raise ApiError("InvalidParameterValue.ProjectIdNotFound", f"The project `{project_id}` does not exist.")
        now = self.cloud.clock.now()
        group = AutoScalingGroup(
            group_id=new_id("asg"),
            region=region,
            name=name,
            launch_configuration_id=lc.launch_configuration_id,
            min_size=min_size,
            max_size=max_size,
            desired=desired,
            vpc_id=p["VpcId"],
            subnet_ids=[],
            project_id=project_id,
            tags=tags_of(p.get("Tags")),
            created_time=self.cloud.clock.iso(now),
            created_at=now,
        )
        self._network(region, group, p.get("SubnetIds"), p.get("Zones"))
        if p.get("LoadBalancerIds") and p.get("ForwardLoadBalancers"):
            raise ApiError("InvalidParameter.Conflict", "Give LoadBalancerIds or ForwardLoadBalancers, not both.")
        group.forward_lbs = self._forward_lbs(region, group, p.get("ForwardLoadBalancers") or [])
        group.load_balancer_ids = self._classic_lbs(region, p.get("LoadBalancerIds") or [])
        self._settings(group, p)
        self.state.groups[group.group_id] = group
        return group

    def modify_group(self, region: str, p: dict[str, Any]) -> AutoScalingGroup:
        group = self.group(region, p["AutoScalingGroupId"])
        draft = group.model_copy(deep=True)
        if "AutoScalingGroupName" in p:
            draft.name = self._unique_name(region, p["AutoScalingGroupName"], group.group_id)
        if "LaunchConfigurationId" in p:
            draft.launch_configuration_id = self.launch_configuration(
                region, p["LaunchConfigurationId"], "InvalidParameterValue.LaunchConfigurationNotFound"
            ).launch_configuration_id
        draft.min_size, draft.max_size = p.get("MinSize", group.min_size), p.get("MaxSize", group.max_size)
        draft.desired = p.get("DesiredCapacity", group.desired)
        check_sizes(draft.min_size, draft.max_size, draft.desired)
        if "VpcId" in p and p["VpcId"] != group.vpc_id:
            if group.instances:
                raise ApiError(
                    "ResourceUnavailable.ForbiddenModifyVpc", "A group with instances cannot change its VPC."
                )
            if "SubnetIds" not in p:
                raise ApiError("MissingParameter", "Changing VpcId needs SubnetIds in the new VPC.")
            draft.vpc_id = p["VpcId"]
        if "SubnetIds" in p or "Zones" in p:
            self._network(region, draft, p.get("SubnetIds"), p.get("Zones"))
        if "ProjectId" in p:
            if p["ProjectId"] not in PROJECTS:
                raise ApiError(
                    "InvalidParameterValue.ProjectIdNotFound", f"The project `{p['ProjectId']}` does not exist."
                )
            draft.project_id = p["ProjectId"]
        self._settings(draft, p)
        if draft.desired != group.desired:
            draft.retry_blocked, draft.failures, draft.cause = False, 0, None
        self.state.groups[group.group_id] = draft
        return draft

    def delete_group(self, region: str, group_id: str) -> None:
        group = self.group(region, group_id)
        self.check_idle(group, "ResourceInUse.ActivityInProgress")
        if group.instances:
            raise ApiError(
                "ResourceInUse.InstanceInGroup",
                f"The scaling group `{group_id}` has {len(group.instances)} instance(s): set its capacity to 0 first.",
            )
        del self.state.groups[group_id]
        for kind in (self.state.scheduled_actions, self.state.policies):
            for key in [k for k, v in kind.items() if v.group_id == group_id]:
                del kind[key]

    def set_enabled(self, region: str, group_id: str, enabled: bool) -> None:
        group = self.group(region, group_id)
        group.enabled = enabled
        group.retry_blocked, group.failures = False, 0

    def modify_desired(
        self, region: str, group_id: str, desired: int, min_size: int | None, max_size: int | None
    ) -> None:
        group = self.group(region, group_id)
        min_size = group.min_size if min_size is None else min_size
        max_size = group.max_size if max_size is None else max_size
        check_sizes(min_size, max_size, desired)
        group.min_size, group.max_size, group.desired = min_size, max_size, desired
        group.retry_blocked, group.failures, group.cause = False, 0, None

    # ---- members -------------------------------------------------------------------------------------
    def _unique_name(self, region: str, name: str, group_id: str | None) -> str:
        check_name("AutoScalingGroupName", name, NAME_BYTES)
        if any(g.name == name and g.group_id != group_id for g in self.groups(region)):
            raise ApiError(
                "InvalidParameterValue.GroupNameDuplicated", f"A scaling group named `{name}` already exists."
            )
        return name

    def _network(
        self, region: str, group: AutoScalingGroup, subnet_ids: list[str] | None, zones: list[str] | None
    ) -> None:
        vpc = vpc_of(self.cloud)
        known_zones = {z.zone for z in REGIONS[region].zones}
        for zone in zones or []:
            if zone not in known_zones:
                raise ApiError("InvalidParameterValue.ZoneMismatchRegion", f"The zone `{zone}` is not in {region}.")
        if subnet_ids:
            if len(set(subnet_ids)) != len(subnet_ids):
                raise ApiError("InvalidParameterValue.DuplicatedSubnet", "SubnetIds lists a subnet more than once.")
            for subnet_id in subnet_ids:
                subnet = vpc.state.subnets.get(subnet_id)
                if subnet is None or subnet.region != region or subnet.vpc_id != group.vpc_id:
                    raise ApiError(
                        "InvalidParameterValue.InvalidSubnetId",
                        f"The subnet `{subnet_id}` does not exist in the VPC `{group.vpc_id}`.",
                    )
            group.subnet_ids = list(subnet_ids)
        elif zones:
            subnets = [s for s in vpc.subnets_of(group.vpc_id) if s.zone in zones]
            if not subnets:
                raise ApiError("InvalidParameterValue.SubnetIds", f"The VPC `{group.vpc_id}` has no subnet in {zones}.")
            group.subnet_ids = [s.subnet_id for s in subnets]
        else:
            raise ApiError("InvalidParameter.MustOneParameter", "A scaling group in a VPC needs SubnetIds (or Zones).")
        group.zones = list(dict.fromkeys(vpc.state.subnets[s].zone for s in group.subnet_ids))

    def _forward_lbs(self, region: str, group: AutoScalingGroup, items: list[dict[str, Any]]) -> list[ForwardLb]:
        if len(items) > MAX_FORWARD_LBS:
            raise ApiError(
                "LimitExceeded.AfterAttachLbLimitExceeded", f"At most {MAX_FORWARD_LBS} ForwardLoadBalancers."
            )
        clb, result, seen = clb_of(self.cloud), [], set()
        for item in items:
            lb_id, listener_id = item["LoadBalancerId"], item["ListenerId"]
            if (lb_id, listener_id, item.get("LocationId")) in seen:
                raise ApiError(
                    "InvalidParameterValue.DuplicatedForwardLb", f"The listener `{listener_id}` is listed twice."
                )
            seen.add((lb_id, listener_id, item.get("LocationId")))
            lb = clb.state.load_balancers.get(lb_id)
            if lb is None or lb.region != (item.get("Region") or region):
                raise ApiError("ResourceNotFound.LoadBalancerNotFound", f"The load balancer `{lb_id}` does not exist.")
            if lb.vpc_id != group.vpc_id:
                raise ApiError(
                    "ResourceUnavailable.LbVpcInconsistent",
                    f"The load balancer `{lb_id}` is in `{lb.vpc_id}`, the group in `{group.vpc_id}`.",
                )
            listener = lb.listeners.get(listener_id)
            if listener is None:
                raise ApiError("ResourceNotFound.ListenerNotFound", f"The listener `{listener_id}` does not exist.")
            if listener.protocol not in LAYER4:
                raise ApiError(
                    "ResourceNotFound.LocationNotFound",
                    f"The forwarding rule `{item.get('LocationId') or ''}` of `{listener_id}` does not exist.",
                )
            if item.get("LocationId"):
                raise ApiError("InvalidParameterValue.ForwardLb", "A layer-4 listener takes no LocationId.")
            ports = [a["Port"] for a in item["TargetAttributes"]]
            if not ports:
                raise ApiError("InvalidParameterValue.ForwardLb", "TargetAttributes must list at least one port.")
            if len(set(ports)) != len(ports):
                raise ApiError("InvalidParameterValue.TargetPortDuplicated", "TargetAttributes lists a port twice.")
            targets = [
                (
                    in_range("TargetAttributes.Port", a["Port"], 1, 65535),
                    in_range("TargetAttributes.Weight", a["Weight"], 0, 100),
                )
                for a in item["TargetAttributes"]
            ]
            result.append(ForwardLb(load_balancer_id=lb_id, listener_id=listener_id, targets=targets, region=lb.region))
        return result

    def _classic_lbs(self, region: str, lb_ids: list[str]) -> list[str]:
        clb = clb_of(self.cloud)
        for lb_id in lb_ids:
            lb = clb.state.load_balancers.get(lb_id)
            if lb is None or lb.region != region:
                raise ApiError(
                    "ResourceNotFound.ClassicLoadBalancerNotFound", f"The classic CLB `{lb_id}` does not exist."
                )
            raise ApiError(
                "InvalidParameterValue.ForwardLb",
                f"`{lb_id}` is an application load balancer: list it in ForwardLoadBalancers, not LoadBalancerIds "
                "(the sandbox emulates no classic CLB).",
            )
        return []

    def _settings(self, group: AutoScalingGroup, p: dict[str, Any]) -> None:
        if "DefaultCooldown" in p:
            group.default_cooldown = in_range("DefaultCooldown", p["DefaultCooldown"], 0, 3600)
        if "TerminationPolicies" in p:
            policies = p["TerminationPolicies"]
            if len(policies) != 1:
                raise ApiError("InvalidParameterValue", "TerminationPolicies takes exactly one policy.")
            group.termination_policy = one_of("TerminationPolicies", policies[0], TERMINATION_POLICIES)
        if "RetryPolicy" in p:
            group.retry_policy = one_of("RetryPolicy", p["RetryPolicy"], RETRY_POLICIES)
        if "ZonesCheckPolicy" in p:
            group.zones_check_policy = one_of("ZonesCheckPolicy", p["ZonesCheckPolicy"], ("ALL", "ANY"))
        if "MultiZoneSubnetPolicy" in p:
            group.multi_zone_subnet_policy = one_of(
                "MultiZoneSubnetPolicy", p["MultiZoneSubnetPolicy"], ("PRIORITY", "EQUALITY")
            )
        if "HealthCheckType" in p:
            group.health_check_type = one_of("HealthCheckType", p["HealthCheckType"], ("CVM", "CLB"))
        if "LoadBalancerHealthCheckGracePeriod" in p:
            group.grace_period = in_range(
                "LoadBalancerHealthCheckGracePeriod", p["LoadBalancerHealthCheckGracePeriod"], 0, 7200
            )
        if "ServiceSettings" in p:
            settings = dict(p["ServiceSettings"])
            if "ScalingMode" in settings:
                one_of(
                    "ServiceSettings.ScalingMode",
                    settings["ScalingMode"],
                    ("CLASSIC_SCALING", "WAKE_UP_STOPPED_SCALING"),
                )
            group.service_settings = {**group.service_settings, **settings}


def check_sizes(min_size: int, max_size: int, desired: int) -> None:
    if max_size > MAX_SIZE:
        raise ApiError("LimitExceeded.MaxSizeLimitExceeded", f"MaxSize ({max_size}) exceeds {MAX_SIZE}.")
    if min_size > MAX_SIZE:
        raise ApiError("LimitExceeded.MinSizeLimitExceeded", f"MinSize ({min_size}) exceeds {MAX_SIZE}.")
    if desired > MAX_SIZE:
        raise ApiError("LimitExceeded.DesiredCapacityLimitExceeded", f"DesiredCapacity ({desired}) exceeds {MAX_SIZE}.")
    if not min_size <= desired <= max_size:
        raise ApiError(
            "InvalidParameterValue.Size",
            f"The sizes must satisfy MinSize <= DesiredCapacity <= MaxSize (got {min_size}, {desired}, {max_size}).",
        )
