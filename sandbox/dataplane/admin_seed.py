"""Admin routes of the guests: `POST /_sandbox/seed` (the guide's starting point) and `GET /_sandbox/guests`.

`POST /_sandbox/seed` body (every field optional): region, zone, project_id, vpc_cidr, subnet_cidr,
key_name, key_file (where the private key is written, mode 0600), image_id, instance_type, name_prefix.
Answers every id, address, port and file path as JSON (see sandbox/dataplane/seed.py).
`GET /_sandbox/guests`: per running server, its apps (state, reason, loaded config), front and port.
"""

from typing import TYPE_CHECKING, Any

from sandbox.dataplane.seed import SeedRequest, seed
from sandbox.wire.admin import admin_route

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud


@admin_route("POST", "seed")
async def seed_route(cloud: "Cloud", body: dict[str, Any]) -> dict[str, Any]:
    return await seed(cloud, SeedRequest.model_validate(body))


@admin_route("GET", "guests")
def guests_route(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    from sandbox.dataplane import dataplane_of

    plane = dataplane_of(cloud)
    guests = plane.guests if plane is not None else None
    if guests is None:
        return {"dataplane": False, "servers": []}
    return {
        "dataplane": True,
        "port_map": guests.ports.table([80, 443, 5757, 8080]),
        "servers": [guests.status(i) for i in sorted(guests.servers)],
    }
