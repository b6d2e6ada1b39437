"""VPC state and rules: VPCs, subnets (with address allocation), security groups and their policies.

The sandbox's networks live in 127.0.0.0/8 so that the data plane can bind every address it
hands out on the loopback interface: a VPC's CIDR must be inside it, and (unlike the real cloud,
where VPCs are isolated) no two VPCs may overlap, because they all share one loopback.
"""

import ipaddress

from pydantic import BaseModel, Field

from sandbox.core.backend import Backend, backend
from sandbox.core.catalog import REGIONS, zone_of
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id
from sandbox.vpc.policies import SecurityGroupPolicy
from sandbox.vpc.security import SecurityGroup, SecurityGroups
from sandbox.vpc.validation import check_id, check_name, parse_network

__all__ = ["SecurityGroup", "SecurityGroupPolicy", "Subnet", "Vpc", "VpcBackend", "VpcState"]

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
HOST_RESERVED = ipaddress.IPv4Network("127.0.0.0/16")  # 127.0.0.1 (the API itself), 127.0.0.53, ...
DEFAULT_DNS = ["183.60.83.19", "183.60.82.98"]  # Tencent Cloud's internal resolvers
VPC_QUOTA = 20  # per region, as the real default quota


def default_vpc_cidr(region: str) -> ipaddress.IPv4Network:
    """ap-guangzhou 127.16.0.0/16, ap-shanghai 127.17.0.0/16, ... (reserved even before first use)."""
    return ipaddress.IPv4Network(f"127.{16 + list(REGIONS).index(region)}.0.0/16")


class Vpc(BaseModel):
    vpc_id: str
    region: str
    vpc_name: str
    cidr_block: str
    is_default: bool = False
    enable_multicast: bool = False
    dns_servers: list[str] = Field(default_factory=lambda: list(DEFAULT_DNS))
    domain_name: str = ""
    route_table_id: str = Field(default_factory=lambda: new_id("rtb"))  # the default route table
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

    @property
    def total_ip_count(self) -> int:
        return ipaddress.IPv4Network(self.cidr_block).num_addresses

    @property
    def available_ip_count(self) -> int:
        # network address, gateway (.1) and broadcast are never handed out (see allocate_ip)
        return max(self.total_ip_count - 3 - len(self.used_ips), 0)


class VpcState(BaseModel):
    vpcs: dict[str, Vpc] = Field(default_factory=dict)
    subnets: dict[str, Subnet] = Field(default_factory=dict)
    security_groups: dict[str, SecurityGroup] = Field(default_factory=dict)
    public_ips: list[str] = Field(default_factory=list)  # allocated from Cloud.public_pool


@backend
class VpcBackend(SecurityGroups, Backend):
    service = "vpc"
    state_model = VpcState
    state: VpcState

    # ---- Addressing, used by cvm (instances) and clb (VIPs) -------------------------------------
    @property
    def public_pool(self) -> ipaddress.IPv4Network:
        """Instances' public IPs and OPEN CLB VIPs: 127.100.0.0/16 unless another sandbox holds it (core/pools)."""
        return self.cloud.public_pool

    def ensure_defaults(self, region: str) -> None:
        """Every region has a default VPC and, per zone, a default subnet and a default security group."""
        if any(v.region == region and v.is_default for v in self.state.vpcs.values()):
            return
        cidr = default_vpc_cidr(region)
        second = cidr.network_address.packed[1]
        now = self.cloud.clock.plain()
        vpc = Vpc(
            vpc_id=new_id("vpc"),
            region=region,
            vpc_name="Default-VPC",
            cidr_block=str(cidr),
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
        everything = {"protocol": "ALL", "port": "ALL", "cidr_block": "0.0.0.0/0", "action": "ACCEPT"}
        group = SecurityGroup(
            security_group_id=new_id("sg"),
            region=region,
            name="default",
            description="System created security group",
            is_default=True,
            ingress=[SecurityGroupPolicy(**everything, modify_time=now)],
            egress=[SecurityGroupPolicy(**everything, modify_time=now)],
            created_time=now,
            update_time=now,
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
        for host in self.public_pool.hosts():
            if str(host) not in used:
                self.state.public_ips.append(str(host))
                return str(host)
        raise ApiError("ResourceInsufficient", "The sandbox's public address pool is exhausted.")

    def release_public_ip(self, ip: str) -> None:
        if ip in self.state.public_ips:
            self.state.public_ips.remove(ip)

    # ---- VPCs and subnets ------------------------------------------------------------------------
    def create_vpc(
        self,
        region: str,
        name: str,
        cidr_block: str,
        tags: dict[str, str],
        dns_servers: list[str] | None = None,
        domain_name: str = "",
        enable_multicast: bool = False,
    ) -> Vpc:
        self.ensure_defaults(region)
        check_name("VpcName", name)
        network = parse_network("CidrBlock", cidr_block)
        if not network.subnet_of(LOOPBACK):
            raise ApiError(
                "InvalidParameterValue",
                f"The CIDR block `{cidr_block}` is outside 127.0.0.0/8: the sandbox's networks live on the loopback "
                "interface so that its data plane can bind every address it hands out.",
            )
        if not 12 <= network.prefixlen <= 28:
            raise ApiError("InvalidParameterValue", f"The CIDR block `{cidr_block}` must have a mask from /12 to /28.")
        taken = [
            (HOST_RESERVED, "the host's own loopback services"),
            (self.public_pool, "the sandbox's public address pool"),
            *[(default_vpc_cidr(r), f"the default VPC of {r}") for r in REGIONS],
            *[(ipaddress.IPv4Network(v.cidr_block), f"VPC {v.vpc_id}") for v in self.state.vpcs.values()],
        ]
        for other, owner in taken:
            if network.overlaps(other):
                raise ApiError(
                    "InvalidParameterValue",
                    f"The CIDR block `{cidr_block}` overlaps {other} ({owner}): every sandbox VPC shares one "
                    "loopback interface, so their CIDR blocks must not overlap.",
                )
        if len(dns_servers or []) > 4:
            raise ApiError("InvalidParameterValue.LimitExceeded", "A VPC takes at most 4 DNS servers.")
        for server in dns_servers or []:
            try:
                ipaddress.IPv4Address(server)
            except ValueError:
                raise ApiError(
                    "InvalidParameterValue.Malformed", f"The DNS server `{server}` is not an IPv4 address."
                ) from None
        if sum(v.region == region for v in self.state.vpcs.values()) >= VPC_QUOTA:
            raise ApiError("VpcLimitExceeded", f"A region holds at most {VPC_QUOTA} VPCs.")
        vpc = Vpc(
            vpc_id=new_id("vpc"),
            region=region,
            vpc_name=name,
            cidr_block=str(network),
            enable_multicast=enable_multicast,
            dns_servers=list(dns_servers) if dns_servers else list(DEFAULT_DNS),
            domain_name=domain_name,
            created_time=self.cloud.clock.plain(),
            tags=tags,
        )
        self.state.vpcs[vpc.vpc_id] = vpc
        return vpc

    def create_subnet(
        self, region: str, vpc_id: str, name: str, zone: str, cidr_block: str, tags: dict[str, str]
    ) -> Subnet:
        check_id("VpcId", vpc_id, "vpc")
        vpc = self.vpc(region, vpc_id)
        check_name("SubnetName", name)
        if zone_of(region, zone) is None:
            zones = ", ".join(z.zone for z in REGIONS[region].zones)
            raise ApiError("InvalidParameterValue", f"The zone `{zone}` is not in {region} (its zones: {zones}).")
        network = parse_network("CidrBlock", cidr_block)
        if not network.subnet_of(ipaddress.IPv4Network(vpc.cidr_block)):
            raise ApiError(
                "InvalidParameterValue.SubnetRange", f"The subnet `{cidr_block}` is not inside {vpc.cidr_block}."
            )
        if not 16 <= network.prefixlen <= 28:
            raise ApiError("InvalidParameterValue.SubnetRange", f"The subnet `{cidr_block}` must have a mask /16-/28.")
        for sibling in self.subnets_of(vpc.vpc_id):
            if network.overlaps(ipaddress.IPv4Network(sibling.cidr_block)):
                raise ApiError(
                    "InvalidParameterValue.SubnetConflict",
                    f"The subnet `{cidr_block}` overlaps {sibling.subnet_id} ({sibling.cidr_block}).",
                )
        subnet = Subnet(
            subnet_id=new_id("subnet"),
            region=region,
            vpc_id=vpc.vpc_id,
            subnet_name=name,
            cidr_block=str(network),
            zone=zone,
            created_time=self.cloud.clock.plain(),
            tags=tags,
        )
        self.state.subnets[subnet.subnet_id] = subnet
        return subnet

    def vpcs(self, region: str) -> list[Vpc]:
        self.ensure_defaults(region)
        return [v for v in self.state.vpcs.values() if v.region == region]

    def subnets(self, region: str) -> list[Subnet]:
        self.ensure_defaults(region)
        return [s for s in self.state.subnets.values() if s.region == region]

    def subnets_of(self, vpc_id: str) -> list[Subnet]:
        return [s for s in self.state.subnets.values() if s.vpc_id == vpc_id]
