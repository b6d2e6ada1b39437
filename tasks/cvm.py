"""CVM: find servers, image one, launch more from the image, wait for them, terminate them.

Every create is idempotent: RunInstances carries a ClientToken derived from the run, and an image
is found by name before it is created, so a retried or re-run flow adopts what an earlier attempt
made instead of duplicating it.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.cloud import call_json, clients_for, retrying
from tasks.transactions import recalled, remember
from tasks.waiters import wait_all, wait_until

RUN_TAG = "tcscale:run"
TIER_TAG = "tcscale:tier"
DESCRIBE_BATCH = 100  # DescribeInstances takes at most 100 ids / returns at most 100 a page


class Server(BaseModel):
    """What the flows need to know of one CVM."""

    instance_id: str
    instance_name: str = ""
    state: str
    region: str
    zone: str
    project_id: int
    instance_type: str
    image_id: str
    os_name: str = ""
    vpc_id: str
    subnet_id: str
    private_ip: str
    public_ip: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    key_ids: list[str] = Field(default_factory=list)
    bandwidth_out: int = 0
    restrict_state: str = "NORMAL"
    expired_time: str | None = None
    latest_operation_error: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def windows(self) -> bool:
        return "windows" in self.os_name.lower()

    def unbindable_reason(self) -> str | None:
        """Why the console would not offer this server for a CLB (None: it would)."""
        if self.restrict_state != "NORMAL":
            return f"it is {self.restrict_state.lower()} (RestrictState {self.restrict_state})"
        if self.expired_time:
            return f"it expired at {self.expired_time}"
        if self.bandwidth_out <= 0:
            return "its public bandwidth is 0"
        return None

    @classmethod
    def from_api(cls, region: str, item: dict[str, Any]) -> Server:
        vpc = item.get("VirtualPrivateCloud") or {}
        internet = item.get("InternetAccessible") or {}
        placement = item["Placement"]
        return cls(
            instance_id=item["InstanceId"],
            instance_name=item.get("InstanceName") or "",
            state=item["InstanceState"],
            region=region,
            zone=placement["Zone"],
            project_id=int(placement.get("ProjectId") or 0),
            instance_type=item["InstanceType"],
            image_id=item.get("ImageId") or "",
            os_name=item.get("OsName") or "",
            vpc_id=vpc.get("VpcId") or "",
            subnet_id=vpc.get("SubnetId") or "",
            private_ip=(item.get("PrivateIpAddresses") or [""])[0],
            public_ip=(item.get("PublicIpAddresses") or [None])[0],
            security_group_ids=item.get("SecurityGroupIds") or [],
            key_ids=(item.get("LoginSettings") or {}).get("KeyIds") or [],
            bandwidth_out=int(internet.get("InternetMaxBandwidthOut") or 0),
            restrict_state=item.get("RestrictState") or "NORMAL",
            expired_time=item.get("ExpiredTime") or None,
            latest_operation_error=item.get("LatestOperationErrorMsg") or "",
            tags={t["Key"]: t["Value"] for t in item.get("Tags") or []},
        )


class Image(BaseModel):
    image_id: str
    image_name: str
    state: str
    reused: bool = False
    tags: dict[str, str] = Field(default_factory=dict)


class ImageNameTaken(Exception):
    def __init__(self, image: Image) -> None:
        super().__init__(
            f"an image named {image.image_name!r} already exists ({image.image_id}, {image.state}) and was not made "
            "by this run: set image.reuse=true to launch from it, or choose another image name"
        )


def adopt_image(images: list[Image], tags: dict[str, str], reuse: bool) -> Image | None:
    """Of the images with the run's image name: the one to launch from instead of a new one (this run's own,
    from an earlier attempt, or with `reuse` any NORMAL one), or None; `ImageNameTaken` when the name is
    someone else's."""
    for image in images:
        ours = image.tags.get(RUN_TAG) == tags.get(RUN_TAG)
        if ours and image.state in ("CREATING", "NORMAL"):
            return image
        if reuse and image.state == "NORMAL":
            return image.model_copy(update={"reused": True})
        if not ours:
            raise ImageNameTaken(image)
    return None


def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]


def describe_servers(
    region: str, instance_ids: list[str] | None = None, filters: list[dict[str, Any]] | None = None
) -> list[Server]:
    """Every server matching ids or filters (all pages; ids in batches of 100)."""
    cvm = clients_for(region).cvm
    found: list[Server] = []
    if instance_ids:
        for start in range(0, len(instance_ids), DESCRIBE_BATCH):
            batch = instance_ids[start : start + DESCRIBE_BATCH]
            answer = call_json(cvm, "DescribeInstances", {"InstanceIds": batch, "Limit": DESCRIBE_BATCH})
            found += [Server.from_api(region, item) for item in answer["InstanceSet"]]
        return found
    offset = 0
    while True:
        request = {"Filters": filters or [], "Offset": offset, "Limit": DESCRIBE_BATCH}
        answer = call_json(cvm, "DescribeInstances", request)
        found += [Server.from_api(region, item) for item in answer["InstanceSet"]]
        offset += len(answer["InstanceSet"])
        if not answer["InstanceSet"] or offset >= answer["TotalCount"]:
            return found


def find_images(region: str, name: str) -> list[Image]:
    answer = call_json(
        clients_for(region).cvm,
        "DescribeImages",
        {"Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}, {"Name": "image-name", "Values": [name]}]},
    )
    return [
        Image(
            image_id=i["ImageId"],
            image_name=i["ImageName"],
            state=i["ImageState"],
            tags={t["Key"]: t["Value"] for t in i.get("Tags") or []},
        )
        for i in answer["ImageSet"]
    ]


@task(name="create-image", cache_policy=NO_CACHE)
@retrying()
def create_image(source: Server, name: str, tags: dict[str, str], reuse: bool, dry_run: bool = False) -> Image:
    """Image the source server, or adopt an image of that name: this run's own (a re-run), or with `reuse`."""
    adopted = adopt_image(find_images(source.region, name), tags, reuse)
    if adopted is not None:
        if not adopted.reused:  # this run's own: its rollback deletes it
            remember(region=source.region, image_id=adopted.image_id)
        return adopted
    if dry_run:
        return Image(image_id="(new image)", image_name=name, state="PLANNED")
    request = {
        "InstanceId": source.instance_id,
        "ImageName": name,
        "ImageDescription": f"tcscale image of {source.instance_id}",
        "TagSpecification": [{"ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    }
    image_id = call_json(clients_for(source.region).cvm, "CreateImage", request)["ImageId"]
    remember(region=source.region, image_id=image_id)
    return Image(image_id=image_id, image_name=name, state="CREATING", tags=tags)


@create_image.on_rollback
def _delete_created_image(txn) -> None:  # type: ignore[no-untyped-def]
    region, image_id = recalled(txn, "region", "image_id")
    if image_id:  # only set for an image this run made
        delete_image.fn(region, image_id)


@task(name="wait-image-normal", cache_policy=NO_CACHE)
def wait_image_normal(region: str, image: Image, timeout: float, poll: float = 2.0) -> Image:
    """Poll DescribeImages until NORMAL; CREATEFAILED fails at once."""
    cvm = clients_for(region).cvm

    def describe() -> dict[str, Any]:
        found = call_json(cvm, "DescribeImages", {"ImageIds": [image.image_id]})["ImageSet"]
        return found[0] if found else {"ImageState": "INVISIBLE"}  # just created: may not be listed yet

    state = wait_until(
        describe,
        done=lambda i: i["ImageState"] == "NORMAL",
        failed=lambda i: f"image {image.image_id} is CREATEFAILED" if i["ImageState"] == "CREATEFAILED" else None,
        what=f"image {image.image_id} ({image.image_name}) to become NORMAL",
        timeout=timeout,
        first_delay=min(poll, 0.2),
        max_delay=poll,
    )
    return image.model_copy(update={"state": state["ImageState"]})


@task(name="run-servers", cache_policy=NO_CACHE)
@retrying()
def run_servers(
    source: Server,
    image_id: str,
    count: int,
    instance_type: str,
    name: str,
    tags: dict[str, str],
    client_token: str,
    dry_run: bool = False,
) -> list[str]:
    """Launch `count` servers from the image, placed exactly like the source (region/zone/project/VPC/subnet/SGs)."""
    request: dict[str, Any] = {
        "Placement": {"Zone": source.zone, "ProjectId": source.project_id},
        "ImageId": image_id,
        "InstanceType": instance_type,
        "InstanceCount": count,
        "InstanceName": name,
        "VirtualPrivateCloud": {"VpcId": source.vpc_id, "SubnetId": source.subnet_id},
        "SecurityGroupIds": source.security_group_ids,
        "InternetAccessible": {"InternetMaxBandwidthOut": source.bandwidth_out},
        "TagSpecification": [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        "ClientToken": client_token,
        "DryRun": dry_run,
    }
    # Log in as on the source: its key pairs, or (a password server, e.g. Windows) the image's own login.
    request["LoginSettings"] = {"KeyIds": source.key_ids} if source.key_ids else {"KeepImageLogin": "TRUE"}
    ids = call_json(clients_for(source.region).cvm, "RunInstances", request)["InstanceIdSet"]
    remember(region=source.region, instance_ids=ids)
    return ids


@run_servers.on_rollback
def _terminate_launched(txn) -> None:  # type: ignore[no-untyped-def]
    region, ids = recalled(txn, "region", "instance_ids")
    if ids:
        terminate_servers.fn(region, ids)


@task(name="wait-servers-running", cache_policy=NO_CACHE)
def wait_servers_running(region: str, instance_ids: list[str], timeout: float, poll: float = 2.0) -> list[Server]:
    """One DescribeInstances per poll for up to 100 servers; LAUNCH_FAILED fails at once with the cloud's message."""

    def describe_many(ids: list[str]) -> dict[str, Server]:
        return {s.instance_id: s for s in describe_servers(region, ids)}

    def launch_failed(server: Server) -> str | None:
        if server.state == "LAUNCH_FAILED":
            return f"LAUNCH_FAILED: {server.latest_operation_error or 'no message'}"
        return None

    done = wait_all(
        describe_many,
        instance_ids,
        done=lambda s: s.state == "RUNNING",
        failed=launch_failed,
        what=f"{len(instance_ids)} server(s) to be RUNNING",
        timeout=timeout,
        first_delay=min(poll, 0.2),
        max_delay=poll,
    )
    return [done[i] for i in instance_ids]


@task(name="terminate-servers", cache_policy=NO_CACHE)
@retrying()
def terminate_servers(region: str, instance_ids: list[str]) -> list[str]:
    """Terminate servers (ignoring ones already gone); returns the ids it asked to terminate."""
    alive = [s.instance_id for s in describe_servers(region, instance_ids) if s.state not in ("TERMINATING",)]
    for start in range(0, len(alive), DESCRIBE_BATCH):
        call_json(clients_for(region).cvm, "TerminateInstances", {"InstanceIds": alive[start : start + DESCRIBE_BATCH]})
    return alive


@task(name="delete-image", cache_policy=NO_CACHE)
@retrying()
def delete_image(region: str, image_id: str) -> bool:
    if not call_json(clients_for(region).cvm, "DescribeImages", {"ImageIds": [image_id]})["ImageSet"]:
        return False
    call_json(clients_for(region).cvm, "DeleteImages", {"ImageIds": [image_id]})
    return True
