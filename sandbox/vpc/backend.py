"""VPC state and rules: VPCs, subnets (with address allocation), security groups and their policies.

The sandbox's networks live in 127.0.0.0/8 so that the data plane can bind every address it
hands out on the loopback interface: a VPC's CIDR must be inside it.
"""

import ipaddress

from pydantic import BaseModel, Field

from sandbox.core.backend import Backend, backend
from sandbox.core.catalog import REGIONS
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id


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
    public_ips: list[str] = Field(default_factory=list)  # allocated from VpcBackend.PUBLIC_POOL


@backend
class VpcBackend(Backend):
    service = "vpc"
    state_model = VpcState
    state: VpcState

    # ---- Addressing, used by cvm (instances) and clb (VIPs) -------------------------------------
    PUBLIC_POOL = ipaddress.ip_network("127.100.0.0/16")  # instances' public IPs, OPEN CLB VIPs

    def ensure_defaults(self, region: str) -> None:
        """Every region has a default VPC and, per zone, a default subnet and a default security group."""
        if any(v.region == region and v.is_default for v in self.state.vpcs.values()):
            return
        second = 16 + list(REGIONS).index(region)  # ap-guangzhou 127.16.0.0/16, ap-shanghai 127.17.0.0/16
        now = self.cloud.clock.iso()
        vpc = Vpc(
            vpc_id=new_id("vpc"),
            region=region,
            vpc_name="Default-VPC",
            cidr_block=f"127.{second}.0.0/16",
            is_default=True,
            created_time=now,
        )
        self.state.vpcs[vpc.vpc_id] = vpc
        for zone in REGIONS[region].zones:
            third = int(zone.zone.rsplit("-", 1)[1])
            subnet = Subnet(
                subnet_id=new_id("subnet"),
                region=region,
                vpc_id=vpc.vpc_id,
                subnet_name="Default-Subnet",
                cidr_block=f"127.{second}.{third}.0/24",
                zone=zone.zone,
                is_default=True,
                created_time=now,
            )
            self.state.subnets[subnet.subnet_id] = subnet
        group = SecurityGroup(
            security_group_id=new_id("sg"),
            region=region,
            name="default",
            description="System created security group",
            is_default=True,
            ingress=[SecurityGroupPolicy(protocol="ALL", port="ALL", cidr_block="0.0.0.0/0", action="ACCEPT")],
            egress=[SecurityGroupPolicy(protocol="ALL", port="ALL", cidr_block="0.0.0.0/0", action="ACCEPT")],
            created_time=now,
        )
        self.state.security_groups[group.security_group_id] = group

    def vpc(self, region: str, vpc_id: str) -> Vpc:
        self.ensure_defaults(region)
        vpc = self.state.vpcs.get(vpc_id)
        if vpc is None or vpc.region != region:
            raise ApiError("ResourceNotFound", f"The VPC `{vpc_id}` does not exist in {region}.")
        return vpc

    def subnet(self, region: str, subnet_id: str) -> Subnet:
        self.ensure_defaults(region)
        subnet = self.state.subnets.get(subnet_id)
        if subnet is None or subnet.region != region:
            raise ApiError("ResourceNotFound", f"The subnet `{subnet_id}` does not exist in {region}.")
        return subnet

    def default_subnet(self, region: str, zone: str) -> Subnet:
        self.ensure_defaults(region)
        return next(s for s in self.state.subnets.values() if s.region == region and s.zone == zone and s.is_default)

    def allocate_ip(self, subnet: Subnet) -> str:
        """The next free address of a subnet (network, gateway .1 and broadcast excluded)."""
        network = ipaddress.ip_network(subnet.cidr_block)
        used = set(subnet.used_ips)
        for host in list(network.hosts())[1:]:
            if str(host) not in used:
                subnet.used_ips.append(str(host))
                return str(host)
        raise ApiError("ResourceInsufficient.SubnetIpNotEnough", f"The subnet `{subnet.subnet_id}` has no free IP.")

    def release_ip(self, subnet_id: str, ip: str) -> None:
        subnet = self.state.subnets.get(subnet_id)
        if subnet is not None and ip in subnet.used_ips:
            subnet.used_ips.remove(ip)

    def allocate_public_ip(self) -> str:
        used = set(self.state.public_ips)
        for host in self.PUBLIC_POOL.hosts():
            if str(host) not in used:
                self.state.public_ips.append(str(host))
                return str(host)
        raise ApiError("ResourceInsufficient", "The sandbox's public address pool is exhausted.")

    def release_public_ip(self, ip: str) -> None:
        if ip in self.state.public_ips:
            self.state.public_ips.remove(ip)
