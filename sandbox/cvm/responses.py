"""CVM 2017-03-12 actions: request parameters in, response shapes out (the rules live in the backend)."""

from typing import Any

from sandbox.core.catalog import PROJECTS, REGIONS
from sandbox.core.errors import ApiError
from sandbox.core.query import apply_filters, paginate, tag_list
from sandbox.core.registry import Request, action
from sandbox.cvm.backend import CvmBackend, KeyPair

VERSION = "2017-03-12"


def cvm(req: Request) -> CvmBackend:
    return req.cloud.backends["cvm"]  # type: ignore[return-value]


def tags_from_specification(specs: list[dict[str, Any]] | None, resource_type: str) -> dict[str, str]:
    """`TagSpecification: [{ResourceType, Tags: [{Key, Value}]}]` → the tags for one resource type."""
    tags: dict[str, str] = {}
    for spec in specs or []:
        if spec.get("ResourceType") == resource_type:
            tags.update({t["Key"]: t["Value"] for t in spec.get("Tags", [])})
    return tags


def check_project(project_id: int) -> int:
    if project_id not in PROJECTS:
        raise ApiError("InvalidProjectId.NotFound", f"The project `{project_id}` does not exist.")
    return project_id


@action("cvm", VERSION, "DescribeRegions")
def describe_regions(req: Request) -> dict[str, Any]:
    regions = [{"Region": r.region, "RegionName": r.region_name, "RegionState": "AVAILABLE"} for r in REGIONS.values()]
    return {"TotalCount": len(regions), "RegionSet": regions}


@action("cvm", VERSION, "DescribeZones")
def describe_zones(req: Request) -> dict[str, Any]:
    zones = [
        {"Zone": z.zone, "ZoneName": z.zone_name, "ZoneId": z.zone_id, "ZoneState": "AVAILABLE"}
        for z in REGIONS[req.region].zones
    ]
    return {"TotalCount": len(zones), "ZoneSet": zones}


def key_pair_view(key: KeyPair, instance_ids: list[str]) -> dict[str, Any]:
    return {
        "KeyId": key.key_id,
        "KeyName": key.key_name,
        "ProjectId": key.project_id,
        "Description": key.description,
        "PublicKey": key.public_key,
        "AssociatedInstanceIds": instance_ids,
        "CreatedTime": key.created_time,
        "Tags": tag_list(key.tags),
    }


@action("cvm", VERSION, "CreateKeyPair")
def create_key_pair(req: Request) -> dict[str, Any]:
    key, private_key = cvm(req).create_key_pair(
        req.region,
        req.params["KeyName"],
        check_project(req.params["ProjectId"]),
        tags_from_specification(req.get("TagSpecification"), "keypair"),
    )
    return {"KeyPair": {**key_pair_view(key, []), "PrivateKey": private_key}}


@action("cvm", VERSION, "ImportKeyPair")
def import_key_pair(req: Request) -> dict[str, Any]:
    key = cvm(req).import_key_pair(
        req.region,
        req.params["KeyName"],
        check_project(req.params["ProjectId"]),
        req.params["PublicKey"],
        tags_from_specification(req.get("TagSpecification"), "keypair"),
    )
    return {"KeyId": key.key_id}


@action("cvm", VERSION, "DescribeKeyPairs")
def describe_key_pairs(req: Request) -> dict[str, Any]:
    backend = cvm(req)
    ids = req.get("KeyIds")
    keys = [backend.key_pair(req.region, i) for i in ids] if ids else backend.key_pairs(req.region)
    keys = apply_filters(
        keys,
        req.get("Filters"),
        {"project-id": lambda k: str(k.project_id), "key-name": lambda k: k.key_name},
        tags=lambda k: k.tags,
    )
    page = paginate(keys, req.get("Offset"), req.get("Limit"))
    return {"TotalCount": len(keys), "KeyPairSet": [key_pair_view(k, []) for k in page]}
