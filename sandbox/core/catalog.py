"""The fixed world of the sandbox: account, regions, zones, projects, instance types, public images."""

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


INSTANCE_TYPES: dict[str, InstanceTypeSpec] = {
    t.instance_type: t
    for t in [
        InstanceTypeSpec(instance_type="S5.SMALL2", family="S5", cpu=1, memory=2),
        InstanceTypeSpec(instance_type="S5.MEDIUM4", family="S5", cpu=2, memory=4),
        InstanceTypeSpec(instance_type="S5.LARGE8", family="S5", cpu=4, memory=8),
        InstanceTypeSpec(instance_type="SA2.MEDIUM4", family="SA2", cpu=2, memory=4),
    ]
}


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
