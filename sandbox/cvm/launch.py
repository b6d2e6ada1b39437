"""What a launch asks for (`LaunchSpec`, shared by RunInstances and the Auto Scaling engine) and naming helpers."""

import ipaddress
import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, SecretStr

if TYPE_CHECKING:
    from sandbox.vpc.backend import Subnet

NAME_PATTERN = re.compile(r"\{R:(\d+)(?:,F:([0-8]))?\}")
DEFAULT_INSTANCE_TYPE = "S5.SMALL2"  # the real cloud picks one by stock; ours is the smallest catalog type


class LaunchSpec(BaseModel):
    """What RunInstances (or the Auto Scaling engine, from a launch configuration) asks for."""

    zone: str
    project_id: int = 0
    image_id: str
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_name: str | None = None
    charge_type: str = "POSTPAID_BY_HOUR"
    prepaid_period: int | None = None  # months, PREPAID only
    renew_flag: str = "NOTIFY_AND_MANUAL_RENEW"
    vpc_id: str | None = None  # None: the region's default VPC and the zone's default subnet
    subnet_id: str | None = None
    security_group_ids: list[str] | None = None  # None: the region's default security group
    key_ids: list[str] = Field(default_factory=list)
    keep_image_login: bool = False
    password: SecretStr | None = Field(None, exclude=True)  # LoginSettings.Password: hashed at launch, never kept
    bandwidth_out: int = 0
    internet_charge_type: str | None = None
    public_ip_assigned: bool | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    host_name: str | None = None
    system_disk_type: str = "CLOUD_PREMIUM"
    system_disk_size: int = 50
    disable_api_termination: bool = False


def free_addresses(subnet: "Subnet") -> int:
    # as VpcBackend.allocate_ip counts them: hosts of the CIDR minus the gateway (.1), minus those in use
    return ipaddress.ip_network(subnet.cidr_block).num_addresses - 3 - len(subnet.used_ips)


def instance_names(name: str | None, count: int) -> list[str]:
    """InstanceName with the documented patterns: `{R:x}` / `{R:x,F:y}` number from x; else suffix 1..n."""
    if name is None:
        return ["未命名"] * count
    if NAME_PATTERN.search(name):
        return [
            NAME_PATTERN.sub(lambda m, i=i: str(int(m.group(1)) + i).zfill(int(m.group(2) or 0)), name)
            for i in range(count)
        ]
    return [name] if count == 1 else [f"{name}{i}" for i in range(1, count + 1)]


def default_host_name(private_ip: str, platform: str) -> str:
    """Like the real cloud's `VM-0-5-centos`: the last two octets of the private IP and the OS."""
    third, fourth = private_ip.split(".")[2:]
    return f"VM-{third}-{fourth}-{platform.lower()}"
