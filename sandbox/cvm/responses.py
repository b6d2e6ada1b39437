"""CVM 2017-03-12 actions: regions, zones, key pairs, instance types, images (instances: `instance_actions`).

Request parameters in, response shapes out; the rules live in the backend.
"""

from typing import Any

from sandbox.core.catalog import OWNER_UIN, PROJECTS, REGIONS, InstanceTypeSpec, instance_types_in
from sandbox.core.errors import ApiError
from sandbox.core.query import apply_filters, paginate, tag_list
from sandbox.core.registry import Request, action
from sandbox.cvm.backend import CvmBackend, Image, KeyPair

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
    shown = paginate(keys, req.get("Offset"), req.get("Limit"))
    return {"TotalCount": len(keys), "KeyPairSet": [key_pair_view(k, key_pair_instances(req, k)) for k in shown]}


# ---- shared by the Describe actions ------------------------------------------------------------
def check_filters(filters: list[dict[str, Any]] | None) -> None:
    """The documented limits of CVM Filters: at most 10 filters of at most 5 values each."""
    if len(filters or []) > 10:
        raise ApiError("InvalidParameterValue.LimitExceeded", "At most 10 filters per request.")
    if any(len(f.get("Values") or []) > 5 for f in filters or []):
        raise ApiError("InvalidFilterValue.LimitExceeded", "At most 5 values per filter.")


def page(items: list[Any], req: Request) -> list[Any]:
    offset, limit = req.get("Offset"), req.get("Limit")
    if offset is not None and offset < 0:
        raise ApiError("InvalidParameterValueOffset", f"The offset `{offset}` is not valid.")
    if limit is not None and not 1 <= limit <= 100:
        raise ApiError("InvalidParameterValueLimit", f"The limit `{limit}` is not valid: it must be 1 to 100.")
    return paginate(items, offset, limit)


def key_pair_instances(req: Request, key: KeyPair) -> list[str]:
    return [i.instance_id for i in cvm(req).instances(req.region) if key.key_id in i.key_ids]


# ---- instance types and images ---------------------------------------------------------------------
def _zone_types(req: Request) -> list[tuple[str, InstanceTypeSpec]]:
    """(zone, instance type) for every type sold in every zone of the region, narrowed by the filters."""
    check_filters(req.get("Filters"))
    configs = [(zone.zone, spec) for zone in REGIONS[req.region].zones for spec in instance_types_in(zone.zone)]
    return apply_filters(
        configs,
        [f for f in req.get("Filters") or [] if f["Name"] != "instance-charge-type"],
        {
            "zone": lambda c: c[0],
            "instance-family": lambda c: c[1].family,
            "instance-type": lambda c: c[1].instance_type,
        },
    )


@action("cvm", VERSION, "DescribeInstanceTypeConfigs")
def describe_instance_type_configs(req: Request) -> dict[str, Any]:
    return {
        "InstanceTypeConfigSet": [
            {
                "Zone": zone,
                "InstanceType": spec.instance_type,
                "InstanceFamily": spec.family,
                "GPU": 0,
                "CPU": spec.cpu,
                "Memory": spec.memory,
                "FPGA": 0,
                "GpuCount": 0.0,
            }
            for zone, spec in _zone_types(req)
        ]
    }


# Family -> (TypeName, CpuType, Frequency) as the console and DescribeZoneInstanceConfigInfos name them.
FAMILY_INFO = {
    "S5": ("标准型S5", "Intel Xeon Cascade Lake 8255C/Intel Xeon Cooper Lake", "2.5/3.1GHz"),
    "S6": ("标准型S6", "Intel Xeon Ice Lake", "2.7/3.3GHz"),
    "SA2": ("标准型SA2", "AMD EPYC ROME", "2.6/3.3GHz"),
    "SA3": ("标准型SA3", "AMD EPYC Milan", "2.55/3.5GHz"),
}


@action("cvm", VERSION, "DescribeZoneInstanceConfigInfos")
def describe_zone_instance_config_infos(req: Request) -> dict[str, Any]:
    charge_types = {v for f in req.get("Filters") or [] if f["Name"] == "instance-charge-type" for v in f["Values"]}
    if charge_types - {"POSTPAID_BY_HOUR", "PREPAID", "SPOTPAID"}:
        raise ApiError("InvalidFilterValue", "instance-charge-type takes POSTPAID_BY_HOUR / PREPAID / SPOTPAID.")
    items = []
    for zone, spec in _zone_types(req):
        type_name, cpu_type, frequency = FAMILY_INFO.get(spec.family, (spec.family, "", ""))
        hourly = round(0.06 * spec.cpu + 0.03 * spec.memory, 2)  # CNY per hour, the order of the real prices
        for charge_type in sorted(charge_types or {"POSTPAID_BY_HOUR"}):
            price = {"UnitPrice": hourly, "ChargeUnit": "HOUR", "UnitPriceDiscount": hourly, "Discount": 100.0}
            if charge_type == "PREPAID":
                monthly = round(hourly * 24 * 30 * 0.6, 2)
                price = {"OriginalPrice": monthly, "DiscountPrice": monthly, "Discount": 100.0}
            items.append(
                {
                    "Zone": zone,
                    "InstanceType": spec.instance_type,
                    "InstanceChargeType": charge_type,
                    "NetworkCard": 25,
                    "Externals": {},
                    "Cpu": spec.cpu,
                    "Memory": spec.memory,
                    "InstanceFamily": spec.family,
                    "TypeName": type_name,
                    "LocalDiskTypeList": [],
                    "Status": "SELL",
                    "Price": price,
                    "SoldOutReason": "",
                    "InstanceBandwidth": max(1.5, spec.cpu * 0.75),
                    "InstancePps": max(30, spec.cpu * 15),
                    "StorageBlockAmount": 0,
                    "CpuType": cpu_type,
                    "Gpu": 0,
                    "Fpga": 0,
                    "Remark": "",
                    "GpuCount": 0.0,
                    "Frequency": frequency,
                    "StatusCategory": "EnoughStock",
                }
            )
    return {"InstanceTypeQuotaSet": items}


def image_view(image: Image) -> dict[str, Any]:
    public = image.image_type == "PUBLIC_IMAGE"
    return {
        "ImageId": image.image_id,
        "OsName": image.os_name,
        "ImageType": image.image_type,
        "CreatedTime": image.created_time,
        "ImageName": image.image_name,
        "ImageDescription": image.image_description,
        "ImageSize": image.image_size,
        "Architecture": image.architecture,
        "ImageState": image.state,
        "Platform": image.platform,
        "ImageCreator": "tencent" if public else OWNER_UIN,
        "ImageSource": "OFFICIAL" if public else "CREATE_IMAGE",
        "SyncPercent": 0 if image.state == "CREATING" else 100,
        "IsSupportCloudinit": True,
        "SnapshotSet": [],
        "Tags": tag_list(image.tags),
        "LicenseType": "TencentCloud",
        "ImageFamily": "",
        "ImageDeprecated": False,
    }


def _contains(field: str, filters: list[dict[str, Any]]) -> Any:
    """A fuzzy filter (image-name, platform are documented as fuzzy): keep images whose field contains a value."""
    values = [v.lower() for f in filters if f["Name"] == field for v in f.get("Values") or []]
    return lambda image: any(v in getattr(image, field.replace("-", "_")).lower() for v in values)


@action("cvm", VERSION, "DescribeImages")
def describe_images(req: Request) -> dict[str, Any]:
    backend = cvm(req)
    ids, filters = req.get("ImageIds"), req.get("Filters")
    if ids and filters:
        raise ApiError(
            "InvalidParameter.InvalidParameterCoexistImageIdsFilters", "ImageIds and Filters cannot be used together."
        )
    check_filters(filters)
    if ids:
        if len(ids) > 100:
            raise ApiError("InvalidParameterValue.LimitExceeded", "At most 100 image ids per request.")
        images = []
        for image_id in dict.fromkeys(ids):
            try:
                images.append(backend.image(req.region, image_id))
            except ApiError as error:
                if error.code != "InvalidImageId.NotFound":
                    raise  # a malformed id is an error; an unknown one is simply absent from the answer
    else:
        images = backend.images(req.region)
    fuzzy = [f for f in filters or [] if f["Name"] in ("image-name", "platform")]
    for name in {f["Name"] for f in fuzzy}:
        images = [i for i in images if _contains(name, fuzzy)(i)]
    images = apply_filters(
        images,
        [f for f in filters or [] if f not in fuzzy],
        {
            "image-id": lambda i: i.image_id,
            "image-type": lambda i: i.image_type,
            "image-state": lambda i: i.state,
        },
        tags=lambda i: i.tags,
    )
    return {"ImageSet": [image_view(i) for i in page(images, req)], "TotalCount": len(images)}


@action("cvm", VERSION, "CreateImage")
def create_image(req: Request) -> dict[str, Any]:
    instance_id = req.get("InstanceId")
    if not instance_id:
        if req.get("SnapshotIds"):
            raise ApiError("UnsupportedOperation", "The sandbox creates images from instances only (InstanceId).")
        raise ApiError("MissingParameter.AtLeastOne", "CreateImage needs `InstanceId` (or `SnapshotIds`).")
    image = cvm(req).create_image(
        req.region,
        instance_id,
        req.params["ImageName"],
        req.get("ImageDescription", ""),
        tags_from_specification(req.get("TagSpecification"), "image"),
        req.request_id,
        req.async_failure,
        dry_run=bool(req.get("DryRun")),
    )
    return {"ImageId": image.image_id}


@action("cvm", VERSION, "DeleteImages")
def delete_images(req: Request) -> dict[str, Any]:
    ids = req.params["ImageIds"]
    if not ids:
        raise ApiError("MissingParameter", "The request is missing a required parameter `ImageIds`.")
    cvm(req).delete_images(req.region, ids, dry_run=bool(req.get("DryRun")))
    return {}
