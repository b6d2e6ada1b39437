"""The guide's starting point, built in one call: one session server and one business server.

Through the backends' own methods (no HTTP to itself): a VPC (127.x) and a subnet, a key pair whose
private key goes to a file (mode 0600; never returned nor logged), two security groups, and two
servers from the CentOS public image with their apps installed on their disks and started:
- session server (tag tcscale:tier=session): mina_auth (port 80), a systemd unit enabled at boot;
  its group admits port 80 only from members of the business group (so not from any CLB VIP)
  and SSH from anywhere;
- business server (tcscale:tier=business): the node demo (pm2 app `weapp`, port 5757), `pm2 save`d
  (starts at boot), `/etc/qcloud/sdk.config` pointing authServerUrl at `http://<session private ip>/mina_auth/`;
  its group admits 5757 and SSH from anywhere.
App ports in the rules and URLs are the REAL ports; `ports.map` says where the sandbox serves each (ports.py),
and `url` per server is the address a client on this host uses. SSH rules name the sandbox's SSH port.
Every resource carries `tcscale:seed=guide`. A second call answers the same description (`"created": false`)
while both servers exist; a half-built seed is a 409 (reset the sandbox).
"""

import asyncio
import ipaddress
import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sandbox.core.emulated_cloud import Cloud
from sandbox.core.errors import ApiError
from sandbox.core.ids import request_id
from sandbox.core.pools import claim
from sandbox.cvm.instances import LaunchSpec
from sandbox.dataplane.apps.layout import (
    MINA_AUTH_CONFIG,
    SDK_CONFIG,
    WEAPP_DIR,
    WEAPP_NAME,
    install_mina_auth,
    install_weapp,
    sdk_config,
)
from sandbox.dataplane.apps.layout import REAL_PORTS as UNIT_PORTS
from sandbox.wire.admin import AdminError

SEED_TAG = "tcscale:seed"
TIER_TAG = "tcscale:tier"
KEY_FILE_TAG = "tcscale:key-file"
CENTOS_IMAGE = "img-l8og963d"
SESSION_PORT, NODE_PORT = UNIT_PORTS["mina_auth"], UNIT_PORTS["pm2"]
REAL_PORTS = (80, 5757, 8080)  # mina_auth / IIS, node demo, tomcat: the seed's networks must be free on all
BOOT_SECONDS = 30.0  # how long a server may take to come up under the data plane, beyond its launch latency


class SeedRequest(BaseModel):
    region: str = "ap-guangzhou"
    zone: str = "ap-guangzhou-3"
    project_id: int = 1001
    vpc_cidr: str | None = Field(
        None, description="default: the first free 127.N.0.0/16 from 127.64 on; a named one is held alike (409: taken)"
    )
    subnet_cidr: str | None = Field(None, description="default: 127.N.<zone number>.0/24 inside vpc_cidr")
    key_name: str = "tcscale_guide"
    key_file: Path | None = Field(None, description="where the private key is written (default: the data dir)")
    image_id: str = CENTOS_IMAGE
    instance_type: str = "S5.SMALL2"
    name_prefix: str = "weapp"


def default_key_file(cloud: Cloud, key_name: str) -> Path:
    """In the sandbox's own state: its state_dir, else its data plane's folder (never shared by two sandboxes)."""
    base = cloud.config.state_dir or _plane(cloud).root
    return Path(base) / "keys" / f"{key_name}.pem"


def _plane(cloud: Cloud) -> Any:
    from sandbox.dataplane import dataplane_of

    plane = dataplane_of(cloud)
    if plane is None or plane.guests is None:
        raise AdminError(409, "the seed needs the data plane (servers and their apps): serve with the data plane on")
    return plane


async def seed(cloud: Cloud, request: SeedRequest) -> dict[str, Any]:
    plane = _plane(cloud)
    existing = [
        i for i in cloud.cvm.instances(request.region) if i.tags.get(SEED_TAG) == "guide" and i.state != "TERMINATING"
    ]
    if existing:
        tiers = {i.tags.get(TIER_TAG): i for i in existing}
        if set(tiers) == {"session", "business"} and len(existing) == 2:
            return describe(cloud, request, tiers["session"], tiers["business"], created=False)
        raise AdminError(409, "a partial seed exists (servers tagged tcscale:seed=guide): reset the sandbox first")
    try:
        return await _build(cloud, plane, request)
    except ApiError as error:
        raise AdminError(400, f"{error.code}: {error.message}") from None


async def _build(cloud: Cloud, plane: Any, request: SeedRequest) -> dict[str, Any]:
    guests = plane.guests
    region, prefix, ssh_port = request.region, request.name_prefix, plane.ssh_port
    tags = {SEED_TAG: "guide"}
    vpc_cidr, subnet_cidr = _networks(cloud, request, [guests.ports.listen(p) for p in REAL_PORTS] + [ssh_port])
    vpc = cloud.vpc.create_vpc(region, f"{prefix}-vpc", vpc_cidr, tags)
    subnet = cloud.vpc.create_subnet(region, vpc.vpc_id, f"{prefix}-{request.zone}", request.zone, subnet_cidr, tags)

    key_file = (request.key_file or default_key_file(cloud, request.key_name)).expanduser().absolute()
    key, private_pem = cloud.cvm.create_key_pair(
        region, request.key_name, request.project_id, {**tags, KEY_FILE_TAG: str(key_file)}
    )
    _write_private(key_file, private_pem)
    del private_pem

    business_sg = cloud.vpc.create_security_group(
        region, f"{prefix}-business", "business servers: HTTP and SSH from anywhere", request.project_id, tags
    )
    session_sg = cloud.vpc.create_security_group(
        region, f"{prefix}-session", "session servers: HTTP only from business servers", request.project_id, tags
    )
    anywhere = [_rule(NODE_PORT, cidr="0.0.0.0/0", note="the node demo"), _rule(ssh_port, cidr="0.0.0.0/0", note="SSH")]
    cloud.vpc.add_policies(region, business_sg.security_group_id, "Ingress", anywhere, None)
    session_rules = [
        _rule(SESSION_PORT, group=business_sg.security_group_id, note="auth service, from business servers only"),
        _rule(ssh_port, cidr="0.0.0.0/0", note="SSH"),
    ]
    cloud.vpc.add_policies(region, session_sg.security_group_id, "Ingress", session_rules, None)
    for group in (business_sg, session_sg):
        egress = [{"Protocol": "ALL", "Port": "ALL", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]
        cloud.vpc.add_policies(region, group.security_group_id, "Egress", egress, None)

    def launch(tier: str, group_id: str, app: str) -> str:
        spec = LaunchSpec(
            zone=request.zone,
            project_id=request.project_id,
            image_id=request.image_id,
            instance_type=request.instance_type,
            instance_name=f"{prefix}-{tier}-1",
            vpc_id=vpc.vpc_id,
            subnet_id=subnet.subnet_id,
            security_group_ids=[group_id],
            key_ids=[key.key_id],
            bandwidth_out=1,
            tags={**tags, TIER_TAG: tier, "tcscale:app": app},
        )
        instance_id = cloud.cvm.run_instances(region, spec, 1, request_id())[0]
        cloud.touched()
        return instance_id

    # One after the other: the first boot of a platform builds its base disk, which the second reuses.
    session_id = launch("session", session_sg.security_group_id, "mina_auth")
    session_disk = await _booted(cloud, plane, session_id)
    business_id = launch("business", business_sg.security_group_id, WEAPP_NAME)
    business_disk = await _booted(cloud, plane, business_id)
    session = cloud.cvm.instance(region, session_id)
    business = cloud.cvm.instance(region, business_id)
    install_mina_auth(session_disk, session_secret=secrets.token_hex(16))
    auth_url = auth_server_url(session.private_ip)
    install_weapp(business_disk, "node", sdk_config(auth_url, server_host=business.public_ip or business.private_ip))
    await _run(guests, session_id, ["systemctl", "daemon-reload"], "/")
    await _run(guests, session_id, ["systemctl", "start", "mina_auth"], "/")
    await _run(guests, business_id, ["pm2", "start", "process.json"], WEAPP_DIR)
    await _run(guests, business_id, ["pm2", "save"], WEAPP_DIR)
    return describe(cloud, request, session, business, created=True)


def _networks(cloud: Cloud, request: SeedRequest, ports: list[int]) -> tuple[str, str]:
    """The VPC and subnet CIDRs: as asked, else the first 127.N.0.0/16 no VPC of this sandbox uses and whose
    first server addresses no other process on this host listens on (sandboxes share one loopback)."""
    zone_number = int(request.zone.rsplit("-", 1)[1]) if request.zone.rsplit("-", 1)[-1].isdigit() else 0

    def subnet_of(vpc_cidr: str) -> str:
        network = ipaddress.IPv4Network(vpc_cidr, strict=False)
        return request.subnet_cidr or str(next(network.subnets(new_prefix=24), network))

    if request.vpc_cidr:
        _claim_named(cloud, request.vpc_cidr)
        return request.vpc_cidr, subnet_of(request.vpc_cidr)
    taken = [ipaddress.IPv4Network(v.cidr_block) for v in cloud.vpc.state.vpcs.values()]
    for second in range(64, 100):
        candidate = ipaddress.IPv4Network(f"127.{second}.0.0/16")
        if any(candidate.overlaps(other) for other in taken):
            continue
        first_hosts = [f"127.{second}.{zone_number}.{host}" for host in (2, 3, 4)]
        if not claim(str(candidate), cloud):  # another sandbox on this machine seeded it
            continue
        if all(_bindable(address, port) for address in first_hosts for port in ports):
            return str(candidate), request.subnet_cidr or f"127.{second}.{zone_number}.0/24"
    raise AdminError(
        409,
        "no free network for the guide's VPC: every 127.N.0.0/16 (N = 64 ... 99) is used by this sandbox, held by "
        "another sandbox on this machine, or its first server addresses are taken; stop another sandbox, or name "
        "a free one with vpc_cidr",
    )


def _claim_named(cloud: Cloud, vpc_cidr: str) -> None:
    """Hold the /16s of a VPC named in the request, as a default one is held: unclaimed, another sandbox's default
    seed could take the same /16, and both seeds' servers (the same first addresses) fight for the unmapped ports."""
    try:
        network = ipaddress.IPv4Network(vpc_cidr, strict=False)
    except ValueError:
        return  # create_vpc refuses it, saying why
    if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        return  # likewise: every sandbox address is a loopback one
    blocks = [network.supernet(new_prefix=16)] if network.prefixlen >= 16 else list(network.subnets(new_prefix=16))
    held = [str(block) for block in blocks if not claim(str(block), cloud)]
    if held:
        raise AdminError(
            409,
            f"vpc_cidr {vpc_cidr}: {', '.join(held)} is held by another sandbox on this machine (its servers have "
            "these addresses): name another /16 of 127.64-99, or leave vpc_cidr out for a free one",
        )


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def auth_server_url(session_ip: str) -> str:
    """The real authServerUrl (port 80); a client on this host reaches it at `session_server.url`."""
    return f"http://{session_ip}/mina_auth/"


def describe(cloud: Cloud, request: SeedRequest, session: Any, business: Any, created: bool) -> dict[str, Any]:
    plane = _plane(cloud)
    ports = plane.ports
    key = cloud.cvm.key_pair(request.region, session.key_ids[0])
    vpc = cloud.vpc.vpc(request.region, session.vpc_id)
    subnet = cloud.vpc.subnet(request.region, session.subnet_id)

    def server(instance: Any, port: int) -> dict[str, Any]:
        return {
            "instance_id": instance.instance_id,
            "instance_name": instance.instance_name,
            "state": instance.state,
            "private_ip": instance.private_ip,
            "public_ip": instance.public_ip,
            "security_group_ids": list(instance.security_group_ids),
            "app_port": port,
            "listen_port": ports.listen(port),
            "url": f"http://{instance.private_ip}:{ports.listen(port)}",  # from this host
        }

    return {
        "created": created,
        "region": request.region,
        "zone": session.zone,
        "project_id": session.project_id,
        "vpc": {"vpc_id": vpc.vpc_id, "cidr_block": vpc.cidr_block},
        "subnet": {"subnet_id": subnet.subnet_id, "cidr_block": subnet.cidr_block, "zone": subnet.zone},
        "key_pair": {"key_id": key.key_id, "key_name": key.key_name, "private_key_file": key.tags.get(KEY_FILE_TAG)},
        "security_groups": {"session": session.security_group_ids[0], "business": business.security_group_ids[0]},
        "ports": {
            "ssh": plane.ssh_port,
            "session": SESSION_PORT,
            "business": NODE_PORT,
            "map": ports.table(list(REAL_PORTS)),
            "app": ports.listen(80),  # deprecated: the port that stands for 80
        },
        "users": {"linux": "root"},
        "session_server": {
            **server(session, SESSION_PORT),
            "app": "mina_auth",
            "config_file": MINA_AUTH_CONFIG,
            "auth_url": auth_server_url(session.private_ip),
        },
        "business_server": {
            **server(business, NODE_PORT),
            "app": WEAPP_NAME,
            "runtime": "node-pm2",
            "app_dir": WEAPP_DIR,
            "process_file": f"{WEAPP_DIR}/process.json",
            "sdk_config": SDK_CONFIG,
        },
        "auth_server_url": auth_server_url(session.private_ip),
    }


async def _booted(cloud: Cloud, plane: Any, instance_id: str) -> Path:
    """The server's disk once the data plane has booted it (polled with a deadline, not a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + cloud.clock.delay("instance.launch") + BOOT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        cloud.advance()
        disk = plane.guests.disk(instance_id)
        if disk is not None:
            return disk
        instance = cloud.cvm.state.instances.get(instance_id)
        if instance is not None and instance.state == "LAUNCH_FAILED":
            raise AdminError(500, f"the seed's server {instance_id} failed to launch: {instance.failure}")
        if plane.errors.get(instance_id):
            raise AdminError(500, f"the seed's server {instance_id} did not boot: {plane.errors[instance_id]}")
        await asyncio.sleep(0.02)
    raise AdminError(504, f"the server {instance_id} did not boot within {BOOT_SECONDS:g} s of its launch")


async def _run(guests: Any, instance_id: str, argv: list[str], cwd: str) -> None:
    code, output = await guests.control(instance_id, argv, cwd)
    if code != 0:
        raise AdminError(500, f"`{' '.join(argv)}` on {instance_id} failed ({code}): {output.strip()}")


def _rule(port: int, cidr: str | None = None, group: str | None = None, note: str = "") -> dict[str, Any]:
    rule: dict[str, Any] = {"Protocol": "TCP", "Port": str(port), "Action": "ACCEPT", "PolicyDescription": note}
    rule.update({"CidrBlock": cidr} if cidr else {"SecurityGroupId": group})
    return rule


def _write_private(path: Path, pem: str) -> None:
    """Mode 0600 from the first byte (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(pem)


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False)
