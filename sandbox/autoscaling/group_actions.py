"""as 2018-04-19 actions: launch configurations and scaling groups (the rules live in the backend)."""

from typing import Any

from sandbox.autoscaling.backend import AsBackend
from sandbox.autoscaling.common import VERSION, clb_of, describe, tag_set
from sandbox.autoscaling.models import AutoScalingGroup, LaunchConfiguration
from sandbox.core.registry import Request, action


def backend_of(req: Request) -> AsBackend:
    return req.cloud.backends["as"]  # type: ignore[return-value]


# ---- launch configurations ----------------------------------------------------------------------------
def lc_view(lc: LaunchConfiguration, backend: AsBackend) -> dict[str, Any]:
    groups = [g for g in backend.state.groups.values() if g.launch_configuration_id == lc.launch_configuration_id]
    return {
        "ProjectId": lc.project_id,
        "LaunchConfigurationId": lc.launch_configuration_id,
        "LaunchConfigurationName": lc.name,
        "InstanceType": lc.instance_types[0],
        "SystemDisk": lc.system_disk,
        "DataDisks": lc.data_disks,
        "LoginSettings": {"KeyIds": list(lc.key_ids)},
        "InternetAccessible": {
            "InternetChargeType": lc.internet_charge_type,
            "InternetMaxBandwidthOut": lc.bandwidth_out,
            "PublicIpAssigned": lc.public_ip_assigned,
            "BandwidthPackageId": None,
        },
        "SecurityGroupIds": list(lc.security_group_ids),
        "AutoScalingGroupAbstractSet": [
            {"AutoScalingGroupId": g.group_id, "AutoScalingGroupName": g.name} for g in groups
        ],
        "UserData": lc.user_data,
        "CreatedTime": lc.created_time,
        "EnhancedService": {
            "SecurityService": {"Enabled": True},
            "MonitorService": {"Enabled": True},
            "AutomationToolsService": {"Enabled": True},
        },
        "ImageId": lc.image_id,
        "LaunchConfigurationStatus": "NORMAL",
        "InstanceChargeType": lc.instance_charge_type,
        "InstanceMarketOptions": None,
        "InstanceTypes": list(lc.instance_types),
        "InstanceTags": [{"Key": k, "Value": v} for k, v in lc.instance_tags.items()],
        "Tags": tag_set(lc.tags, "launch-configuration"),
        "VersionNumber": lc.version_number,
        "UpdatedTime": lc.updated_time,
        "CamRoleName": lc.cam_role_name,
        "LastOperationInstanceTypesCheckPolicy": lc.instance_types_check_policy,
        "HostNameSettings": {"HostName": lc.host_name, "HostNameStyle": "ORIGINAL"} if lc.host_name else None,
        "InstanceNameSettings": {"InstanceName": lc.instance_name, "InstanceNameStyle": lc.instance_name_style}
        if lc.instance_name
        else None,
        "InstanceChargePrepaid": None,
        "DiskTypePolicy": lc.disk_type_policy,
        "HpcClusterId": "",
        "IPv6InternetAccessible": {"InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR", "InternetMaxBandwidthOut": 0},
        "DisasterRecoverGroupIds": [],
        "ImageFamily": "",
        "DedicatedClusterId": "",
        "NetworkInterfaces": [],
    }


@action("as", VERSION, "CreateLaunchConfiguration")
def create_launch_configuration(req: Request) -> dict[str, Any]:
    lc = backend_of(req).create_launch_configuration(req.region, req.params)
    return {"LaunchConfigurationId": lc.launch_configuration_id}


@action("as", VERSION, "DescribeLaunchConfigurations")
def describe_launch_configurations(req: Request) -> dict[str, Any]:
    backend = backend_of(req)
    total, page = describe(
        backend.launch_configurations(req.region),
        req.get("LaunchConfigurationIds"),
        lambda lc: lc.launch_configuration_id,
        req.get("Filters"),
        {
            "launch-configuration-id": lambda lc: lc.launch_configuration_id,
            "launch-configuration-name": lambda lc: lc.name,
        },
        req.get("Offset"),
        req.get("Limit"),
        tags=lambda lc: lc.tags,
        vague={"vague-launch-configuration-name": lambda lc: lc.name},
    )
    return {"TotalCount": total, "LaunchConfigurationSet": [lc_view(lc, backend) for lc in page]}


@action("as", VERSION, "ModifyLaunchConfigurationAttributes")
def modify_launch_configuration_attributes(req: Request) -> dict[str, Any]:
    backend_of(req).modify_launch_configuration(req.region, req.params)
    return {}


@action("as", VERSION, "DeleteLaunchConfiguration")
def delete_launch_configuration(req: Request) -> dict[str, Any]:
    backend_of(req).delete_launch_configuration(req.region, req.params["LaunchConfigurationId"])
    return {}


# ---- scaling groups -------------------------------------------------------------------------------------
def group_status(group: AutoScalingGroup, req: Request) -> str:
    lbs = clb_of(req.cloud).state.load_balancers
    for forward in group.forward_lbs:
        lb = lbs.get(forward.load_balancer_id)
        if lb is None:
            return "LB_ABNORMAL"
        if forward.listener_id not in lb.listeners:
            return "LB_LISTENER_ABNORMAL"
    return "NORMAL"


def group_view(group: AutoScalingGroup, backend: AsBackend, req: Request) -> dict[str, Any]:
    lc = backend.state.launch_configurations.get(group.launch_configuration_id)
    in_service = sum(1 for i in group.instances.values() if i.life_cycle_state == "IN_SERVICE")
    settings = {
        "ReplaceMonitorUnhealthy": False,
        "ScalingMode": "CLASSIC_SCALING",
        "ReplaceLoadBalancerUnhealthy": False,
        "ReplaceMode": "RECREATE",
        "AutoUpdateInstanceTags": False,
        "DesiredCapacitySyncWithMaxMinSize": False,
        "PriorityScaleInUnhealthy": False,
    }
    return {
        "AutoScalingGroupId": group.group_id,
        "AutoScalingGroupName": group.name,
        "AutoScalingGroupStatus": group_status(group, req),
        "CreatedTime": group.created_time,
        "DefaultCooldown": group.default_cooldown,
        "DesiredCapacity": group.desired,
        "EnabledStatus": "ENABLED" if group.enabled else "DISABLED",
        "ForwardLoadBalancerSet": [
            {
                "LoadBalancerId": f.load_balancer_id,
                "ListenerId": f.listener_id,
                "TargetAttributes": [{"Port": port, "Weight": weight} for port, weight in f.targets],
                "LocationId": f.location_id or "",
                "Region": f.region,
            }
            for f in group.forward_lbs
        ],
        "InstanceCount": len(group.instances),
        "InServiceInstanceCount": in_service,
        "LaunchConfigurationId": group.launch_configuration_id,
        "LaunchConfigurationName": lc.name if lc else "",
        "LoadBalancerIdSet": list(group.load_balancer_ids),
        "MaxSize": group.max_size,
        "MinSize": group.min_size,
        "ProjectId": group.project_id,
        "SubnetIdSet": list(group.subnet_ids),
        "TerminationPolicySet": [group.termination_policy],
        "VpcId": group.vpc_id,
        "ZoneSet": list(group.zones),
        "RetryPolicy": group.retry_policy,
        "InActivityStatus": "IN_ACTIVITY" if backend.in_activity(group) else "NOT_IN_ACTIVITY",
        "Tags": tag_set(group.tags, "auto-scaling-group"),
        "ServiceSettings": {**settings, **group.service_settings},
        "Ipv6AddressCount": 0,
        "MultiZoneSubnetPolicy": group.multi_zone_subnet_policy,
        "HealthCheckType": group.health_check_type,
        "LoadBalancerHealthCheckGracePeriod": group.grace_period,
        "InstanceAllocationPolicy": "LAUNCH_CONFIGURATION",
        "SpotMixedAllocationPolicy": {
            "BaseCapacity": None,
            "OnDemandPercentageAboveBaseCapacity": None,
            "SpotAllocationStrategy": None,
            "CompensateWithBaseInstance": None,
        },
        "CapacityRebalance": False,
        "InstanceNameIndexSettings": {"Enabled": False, "BeginIndex": 0},
        "HostNameIndexSettings": {"Enabled": False, "BeginIndex": 0},
        "ConcurrentScaleOutForDesiredCapacity": False,
    }


@action("as", VERSION, "CreateAutoScalingGroup")
def create_auto_scaling_group(req: Request) -> dict[str, Any]:
    return {"AutoScalingGroupId": backend_of(req).create_group(req.region, req.params).group_id}


@action("as", VERSION, "DescribeAutoScalingGroups")
def describe_auto_scaling_groups(req: Request) -> dict[str, Any]:
    backend = backend_of(req)
    total, page = describe(
        sorted(backend.groups(req.region), key=lambda g: g.created_at, reverse=True),
        req.get("AutoScalingGroupIds"),
        lambda g: g.group_id,
        req.get("Filters"),
        {
            "auto-scaling-group-id": lambda g: g.group_id,
            "auto-scaling-group-name": lambda g: g.name,
            "launch-configuration-id": lambda g: g.launch_configuration_id,
        },
        req.get("Offset"),
        req.get("Limit"),
        tags=lambda g: g.tags,
        vague={"vague-auto-scaling-group-name": lambda g: g.name},
    )
    return {"TotalCount": total, "AutoScalingGroupSet": [group_view(g, backend, req) for g in page]}


@action("as", VERSION, "ModifyAutoScalingGroup")
def modify_auto_scaling_group(req: Request) -> dict[str, Any]:
    backend_of(req).modify_group(req.region, req.params)
    return {}


@action("as", VERSION, "DeleteAutoScalingGroup")
def delete_auto_scaling_group(req: Request) -> dict[str, Any]:
    backend_of(req).delete_group(req.region, req.params["AutoScalingGroupId"])
    return {}


@action("as", VERSION, "EnableAutoScalingGroup")
def enable_auto_scaling_group(req: Request) -> dict[str, Any]:
    backend_of(req).set_enabled(req.region, req.params["AutoScalingGroupId"], True)
    return {}


@action("as", VERSION, "DisableAutoScalingGroup")
def disable_auto_scaling_group(req: Request) -> dict[str, Any]:
    backend_of(req).set_enabled(req.region, req.params["AutoScalingGroupId"], False)
    return {}


@action("as", VERSION, "ModifyDesiredCapacity")
def modify_desired_capacity(req: Request) -> dict[str, Any]:
    p = req.params
    backend_of(req).modify_desired(
        req.region, p["AutoScalingGroupId"], p["DesiredCapacity"], p.get("MinSize"), p.get("MaxSize")
    )
    return {}
