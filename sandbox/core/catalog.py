"""The fixed world of the sandbox: account, regions, zones, projects, instance types, public images."""

import re

from pydantic import BaseModel

APP_ID = 1250000000
OWNER_UIN = "100000000001"


class Zone(BaseModel):
    zone: str
    zone_id: str
    zone_name: str


class Region(BaseModel):
    region: str
    region_name: str
    zones: list[Zone]


REGIONS: dict[str, Region] = {
    r.region: r
    for r in [
        Region(
            region="ap-guangzhou",
            region_name="华南地区(广州)",
            zones=[
                Zone(zone="ap-guangzhou-3", zone_id="100003", zone_name="广州三区"),
                Zone(zone="ap-guangzhou-4", zone_id="100004", zone_name="广州四区"),
            ],
        ),
        Region(
            region="ap-shanghai",
            region_name="华东地区(上海)",
            zones=[
                Zone(zone="ap-shanghai-2", zone_id="200002", zone_name="上海二区"),
                Zone(zone="ap-shanghai-4", zone_id="200004", zone_name="上海四区"),
            ],
        ),
    ]
}

# ProjectId 0 is every account's default project; 1001 stands for the guide's 微信小程序 project.
PROJECTS: dict[int, str] = {0: "默认项目", 1001: "微信小程序"}


class InstanceTypeSpec(BaseModel):
    instance_type: str
    family: str
    cpu: int
    memory: int  # GB
    zones: list[str] | None = None  # None: sold in every zone of every region


# The standard families a user names (S5, S6: Intel; SA2, SA3: AMD), each in the sizes Tencent lists:
# the size says the cores (SMALL 1, MEDIUM 2, LARGE 4, nXLARGE 4n) and ends with the memory in GB.
STANDARD_FAMILIES = ("S5", "S6", "SA2", "SA3")
STANDARD_SIZES = (
    "SMALL1", "SMALL2", "SMALL4", "MEDIUM2", "MEDIUM4", "MEDIUM8", "LARGE8", "LARGE16",
    "2XLARGE16", "2XLARGE32", "4XLARGE32", "4XLARGE64", "6XLARGE48", "6XLARGE96",
    "8XLARGE64", "8XLARGE128", "12XLARGE96", "12XLARGE192", "16XLARGE128", "16XLARGE256",
)  # fmt: skip
_SIZE = re.compile(r"^(SMALL|MEDIUM|LARGE|(\d+)XLARGE)(\d+)$")


def size_spec(size: str) -> tuple[int, int]:
    """`MEDIUM4` -> (2 cores, 4 GB), `8XLARGE64` -> (32, 64)."""
    match = _SIZE.match(size)
    if match is None:
        raise ValueError(f"not an instance size: {size}")
    cores = {"SMALL": 1, "MEDIUM": 2, "LARGE": 4}.get(match[1]) or 4 * int(match[2])
    return cores, int(match[3])


def _standard_types() -> list[InstanceTypeSpec]:
    specs = []
    for family in STANDARD_FAMILIES:
        for size in STANDARD_SIZES:
            cpu, memory = size_spec(size)
            specs.append(InstanceTypeSpec(instance_type=f"{family}.{size}", family=family, cpu=cpu, memory=memory))
    return specs


INSTANCE_TYPES: dict[str, InstanceTypeSpec] = {t.instance_type: t for t in _standard_types()}


def instance_types_in(zone: str) -> list[InstanceTypeSpec]:
    """The instance types sold in a zone (DescribeInstanceTypeConfigs / DescribeZoneInstanceConfigInfos)."""
    return [t for t in INSTANCE_TYPES.values() if t.zones is None or zone in t.zones]


class PublicImage(BaseModel):
    image_id: str
    image_name: str
    os_name: str
    platform: str
    architecture: str = "x86_64"
    image_size: int = 50


PUBLIC_IMAGES: dict[str, PublicImage] = {
    i.image_id: i
    for i in [
        PublicImage(
            image_id="img-l8og963d",
            image_name="CentOS 7.9 64位",
            os_name="CentOS 7.9 64位",
            platform="CentOS",
        ),
        PublicImage(
            image_id="img-eb30mz89",
            image_name="TencentOS Server 3.1 (TK4)",
            os_name="TencentOS Server 3.1 (TK4)",
            platform="TencentOS",
        ),
        PublicImage(
            image_id="img-9id7emv7",
            image_name="Windows Server 2019 数据中心版 64位中文版",
            os_name="Windows Server 2019 数据中心版 64位中文版",
            platform="Windows",
        ),
    ]
}


def zone_of(region: str, zone: str) -> Zone | None:
    return next((z for z in REGIONS[region].zones if z.zone == zone), None)
