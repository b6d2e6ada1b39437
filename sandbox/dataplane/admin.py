"""Admin routes of the servers: `GET /_sandbox/servers` tells a client everything it must not guess.

`port_map`: real port -> the port the sandbox listens on for it (ports.py; `app_port` is the one for 80).
Each server: instance id, state, addresses, SSH port, `ports` (its apps' real ports -> the ports really
listened on), login user, disk folder, and the
known_hosts lines of its host key (`[ip]:port ssh-ed25519 AAAA…`, or `ip …` on port 22), so a
client can verify the host strictly (paramiko RejectPolicy + HostKeys).
"""

from typing import Any

from sandbox.core.emulated_cloud import Cloud
from sandbox.wire.admin import admin_route


@admin_route("GET", "servers")
def list_servers(cloud: Cloud, _: dict[str, Any]) -> dict[str, Any]:
    from sandbox.dataplane import dataplane_of

    cloud.advance(force=True)  # report states as DescribeInstances would now
    plane = dataplane_of(cloud)
    if plane is None:
        return {"dataplane": False, "servers": []}
    return {
        "dataplane": True,
        "shell": plane.shell.mode,
        "ssh_port": plane.ssh_port,
        "app_port": plane.app_port,
        "port_map": plane.ports.table([80, 443, 5757, 8080]),
        "root": str(plane.root),
        "servers": plane.describe(),
    }


@admin_route("POST", "servers/settle")
async def settle_servers(cloud: Cloud, _: dict[str, Any]) -> dict[str, Any]:
    """Wait until every server has converged to its instance's state (boots and shutdowns finished)."""
    from sandbox.dataplane import dataplane_of

    cloud.advance(force=True)
    plane = dataplane_of(cloud)
    if plane is not None:
        await plane.settled()
    return list_servers(cloud, {})
