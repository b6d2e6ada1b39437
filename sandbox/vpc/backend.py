"""VPC state and rules: VPCs, subnets (with address allocation), security groups and their policies.

The sandbox's networks live in 127.0.0.0/8 so that the data plane can bind every address it
hands out on the loopback interface: a VPC's CIDR must be inside it.
"""

from pydantic import BaseModel, Field

from sandbox.core.backend import Backend, backend


class Vpc(BaseModel):
    vpc_id: str
    region: str
    vpc_name: str
    cidr_block: str
    is_default: bool = False
    created_time: str
    tags: dict[str, str] = Field(default_factory=dict)


class Subnet(BaseModel):
    subnet_id: str
    region: str
    vpc_id: str
    subnet_name: str
    cidr_block: str
    zone: str
    is_default: bool = False
    used_ips: list[str] = Field(default_factory=list)  # allocated to instances / CLB VIPs
    created_time: str
    tags: dict[str, str] = Field(default_factory=dict)


class SecurityGroupPolicy(BaseModel):
    """One rule, shaped like the API's SecurityGroupPolicy (one direction)."""

    protocol: str = "ALL"  # TCP, UDP, ICMP, ALL
    port: str = "ALL"  # "80", "8000-8010", "22,80", "ALL"
    cidr_block: str | None = None
    security_group_id: str | None = None  # source group (mutually exclusive with cidr_block)
    action: str = "ACCEPT"  # ACCEPT / DROP
    description: str = ""
    modify_time: str = ""


class SecurityGroup(BaseModel):
    security_group_id: str
    region: str
    name: str
    description: str = ""
    project_id: int = 0
    is_default: bool = False
    ingress: list[SecurityGroupPolicy] = Field(default_factory=list)
    egress: list[SecurityGroupPolicy] = Field(default_factory=list)
    version: int = 0  # SecurityGroupPolicySet.Version, bumped on each change
    created_time: str
    tags: dict[str, str] = Field(default_factory=dict)


class VpcState(BaseModel):
    vpcs: dict[str, Vpc] = Field(default_factory=dict)
    subnets: dict[str, Subnet] = Field(default_factory=dict)
    security_groups: dict[str, SecurityGroup] = Field(default_factory=dict)


@backend
class VpcBackend(Backend):
    service = "vpc"
    state_model = VpcState
    state: VpcState
