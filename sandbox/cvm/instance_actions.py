"""CVM 2017-03-12 instance actions: RunInstances, DescribeInstances(Status), Stop/Start/Reboot/Terminate."""

from typing import Any

from sandbox.core.catalog import INSTANCE_TYPES
from sandbox.core.errors import ApiError
from sandbox.core.query import apply_filters, tag_list
from sandbox.core.registry import Request, action
from sandbox.cvm.instances import check_id_count, check_instance_id
from sandbox.cvm.launch import DEFAULT_INSTANCE_TYPE, LaunchSpec
from sandbox.cvm.models import Instance
from sandbox.cvm.responses import VERSION, check_filters, cvm, page, tags_from_specification

ISOLATED_SOURCE = {"NORMAL": "NOTISOLATED", "EXPIRED": "EXPIRE", "PROTECTIVELY_ISOLATED": "MANMADE"}


def launch_spec(params: dict[str, Any]) -> LaunchSpec:
    """RunInstances parameters -> LaunchSpec (the members we emulate; the rest is accepted and ignored)."""
    placement = params["Placement"]
    network = params.get("VirtualPrivateCloud") or {}
    internet = params.get("InternetAccessible") or {}
    login = params.get("LoginSettings") or {}
    prepaid = params.get("InstanceChargePrepaid") or {}
    disk = params.get("SystemDisk") or {}
    optional = {
        "vpc_id": network.get("VpcId"),
        "subnet_id": network.get("SubnetId"),
        "security_group_ids": params.get("SecurityGroupIds"),
        "instance_name": params.get("InstanceName"),
        "host_name": params.get("HostName"),
        "prepaid_period": prepaid.get("Period"),
        "renew_flag": prepaid.get("RenewFlag"),
        "internet_charge_type": internet.get("InternetChargeType"),
        "public_ip_assigned": internet.get("PublicIpAssigned"),
        "system_disk_type": disk.get("DiskType"),
        "system_disk_size": disk.get("DiskSize"),
        "disable_api_termination": params.get("DisableApiTermination"),
        "charge_type": params.get("InstanceChargeType"),
    }
    return LaunchSpec(
        zone=placement["Zone"],
        project_id=placement.get("ProjectId", 0),
        image_id=params["ImageId"],
        instance_type=params.get("InstanceType") or DEFAULT_INSTANCE_TYPE,
        key_ids=login.get("KeyIds") or [],
        keep_image_login=str(login.get("KeepImageLogin", "")).upper() == "TRUE",
        password=login.get("Password"),
        bandwidth_out=internet.get("InternetMaxBandwidthOut", 0),
        tags=tags_from_specification(params.get("TagSpecification"), "instance"),
        **{k: v for k, v in optional.items() if v is not None},
    )


@action("cvm", VERSION, "RunInstances")
def run_instances(req: Request) -> dict[str, Any]:
    # Required only in the docs' prose (they may come from a LaunchTemplate, which the sandbox does not emulate).
    for name in ("Placement", "ImageId"):
        if not req.get(name):
            raise ApiError("MissingParameter", f"The request is missing a required parameter `{name}`.")
    ids = cvm(req).run_instances(
        req.region,
        launch_spec(req.params),
        req.get("InstanceCount", 1),
        req.request_id,
        async_failure=req.async_failure,
        client_token=req.get("ClientToken"),
        dry_run=bool(req.get("DryRun")),
    )
    return {"InstanceIdSet": ids}


def instance_view(instance: Instance, login_port: int) -> dict[str, Any]:
    spec = INSTANCE_TYPES[instance.instance_type]
    windows = instance.platform == "Windows"
    return {
        "Placement": {"Zone": instance.zone, "ProjectId": instance.project_id, "HostIds": []},
        "InstanceId": instance.instance_id,
        "InstanceType": instance.instance_type,
        "CPU": spec.cpu,
        "Memory": spec.memory,
        "RestrictState": instance.restrict_state,
        "InstanceName": instance.instance_name,
        "InstanceChargeType": instance.charge_type,
        "SystemDisk": {
            "DiskType": instance.system_disk_type,
            "DiskId": instance.system_disk_id,
            "DiskSize": instance.system_disk_size,
            "Encrypt": False,
            "KmsKeyId": "",
        },
        "DataDisks": [],
        "PrivateIpAddresses": [instance.private_ip],
        "PublicIpAddresses": [instance.public_ip] if instance.public_ip else None,
        "InternetAccessible": {
            "InternetChargeType": instance.internet_charge_type,
            "InternetMaxBandwidthOut": instance.bandwidth_out,
            "PublicIpAssigned": instance.public_ip is not None,
        },
        "VirtualPrivateCloud": {"VpcId": instance.vpc_id, "SubnetId": instance.subnet_id, "AsVpcGateway": False},
        "ImageId": instance.image_id,
        "RenewFlag": instance.renew_flag,
        "CreatedTime": instance.created_time,
        "ExpiredTime": instance.expired_time,
        "OsName": instance.os_name,
        "SecurityGroupIds": list(instance.security_group_ids),
        "LoginSettings": {"KeyIds": list(instance.key_ids) or None},
        "InstanceState": instance.state,
        "Tags": tag_list(instance.tags),
        "StopChargingMode": "NOT_APPLICABLE",
        "Uuid": instance.uuid,
        "LatestOperation": instance.latest_operation,
        "LatestOperationState": instance.latest_operation_state,
        "LatestOperationRequestId": instance.latest_operation_request_id,
        "DisasterRecoverGroupId": "",
        "IPv6Addresses": None,
        "CamRoleName": "",
        "HpcClusterId": "",
        "RdmaIpAddresses": [],
        "DedicatedClusterId": "",
        "IsolatedSource": ISOLATED_SOURCE.get(instance.restrict_state, "NOTISOLATED"),
        "DisasterRecoverGroupIds": [],
        "LicenseType": "TencentCloud",
        "DisableApiTermination": instance.disable_api_termination,
        "HostName": instance.host_name,
        "DefaultLoginUser": "Administrator" if windows else "root",
        "DefaultLoginPort": 3389 if windows else login_port,
        "LatestOperationErrorMsg": instance.latest_operation_error_msg,
    }


INSTANCE_FILTERS = {
    "zone": lambda i: i.zone,
    "project-id": lambda i: str(i.project_id),
    "instance-id": lambda i: i.instance_id,
    "uuid": lambda i: i.uuid,
    "instance-name": lambda i: i.instance_name,
    "instance-state": lambda i: i.state,
    "instance-charge-type": lambda i: i.charge_type,
    "instance-type": lambda i: i.instance_type,
    "private-ip-address": lambda i: i.private_ip,
    "public-ip-address": lambda i: i.public_ip,
    "vpc-id": lambda i: i.vpc_id,
    "subnet-id": lambda i: i.subnet_id,
    "security-group-id": lambda i: i.security_group_ids,
    "image-id": lambda i: i.image_id,
}


def selected_instances(req: Request, filters: list[dict[str, Any]] | None = None) -> list[Instance]:
    """InstanceIds (in the order asked; unknown ids are simply absent) or every instance, newest first."""
    backend = cvm(req)
    ids = req.get("InstanceIds")
    if ids and filters:
        raise ApiError("InvalidParameterCombination", "InstanceIds and Filters cannot be specified together.")
    if not ids:
        instances = list(reversed(backend.instances(req.region)))
    else:
        check_id_count(ids)
        for instance_id in ids:
            check_instance_id(instance_id)
        known = backend.state.instances
        instances = [known[i] for i in dict.fromkeys(ids) if i in known and known[i].region == req.region]
    if filters:
        check_filters(filters)
        instances = apply_filters(instances, filters, INSTANCE_FILTERS, tags=lambda i: i.tags)
    return instances


@action("cvm", VERSION, "DescribeInstances")
def describe_instances(req: Request) -> dict[str, Any]:
    instances = selected_instances(req, req.get("Filters"))
    port = req.cloud.config.ssh_port or 22
    return {"TotalCount": len(instances), "InstanceSet": [instance_view(i, port) for i in page(instances, req)]}


@action("cvm", VERSION, "DescribeInstancesStatus")
def describe_instances_status(req: Request) -> dict[str, Any]:
    instances = selected_instances(req)
    statuses = [{"InstanceId": i.instance_id, "InstanceState": i.state} for i in page(instances, req)]
    return {"TotalCount": len(instances), "InstanceStatusSet": statuses}


def _power(req: Request, operation: str) -> dict[str, Any]:
    backend = cvm(req)
    method = {
        "StopInstances": backend.stop_instances,
        "StartInstances": backend.start_instances,
        "RebootInstances": backend.reboot_instances,
        "TerminateInstances": backend.terminate_instances,
    }[operation]
    ids = req.params["InstanceIds"]
    if not ids:
        raise ApiError("MissingParameter", "The request is missing a required parameter `InstanceIds`.")
    method(req.region, ids, req.request_id, req.async_failure)
    return {}


@action("cvm", VERSION, "StopInstances")
def stop_instances(req: Request) -> dict[str, Any]:
    return _power(req, "StopInstances")


@action("cvm", VERSION, "StartInstances")
def start_instances(req: Request) -> dict[str, Any]:
    return _power(req, "StartInstances")


@action("cvm", VERSION, "RebootInstances")
def reboot_instances(req: Request) -> dict[str, Any]:
    return _power(req, "RebootInstances")


@action("cvm", VERSION, "TerminateInstances")
def terminate_instances(req: Request) -> dict[str, Any]:
    return _power(req, "TerminateInstances")
