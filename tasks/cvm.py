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
from tasks.waiters import wait_all, wait_until

RUN_TAG = "tcscale:run"
TIER_TAG = "tcscale:tier"
DESCRIBE_BATCH = 100  # DescribeInstances takes at most 100 ids / returns at most 100 a page
# States in which the API refuses to delete an image (DeleteImages' docs) or to terminate a server (it answers
# UnsupportedOperation.InstanceState<state>): passing ones, which an undo waits out before it deletes.
IMAGE_BUSY = ("CREATING", "SYNCING", "IMPORTING", "USING")
SERVER_BUSY = ("PENDING", "STARTING", "STOPPING", "REBOOTING")
SERVER_GOING = ("TERMINATING", "SHUTDOWN", "TERMINATED")


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
    internet_accessible: dict[str, Any] = Field(
        default_factory=dict, description="InternetAccessible as DescribeInstances shows it: new servers copy it"
    )
    created_time: str = ""
    restrict_state: str = "NORMAL"
    expired_time: str | None = None
    latest_operation_error: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def windows(self) -> bool:
        return "windows" in self.os_name.lower()

    def unbindable_reason(self) -> str | None:
        """Why RegisterTargets would refuse this server (None: it binds).

        Isolated and expired servers cannot be bound. The guide's "bandwidth not 0" describes the console's
        list; the API binds a server without public bandwidth to a VPC load balancer, so that is no reason.
        """
        if self.restrict_state != "NORMAL":
            return f"it is {self.restrict_state.lower()} (RestrictState {self.restrict_state})"
        if self.expired_time:
            return f"it expired at {self.expired_time}"
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
            internet_accessible=internet,
            created_time=item.get("CreatedTime") or "",
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
    return Image(image_id=image_id, image_name=name, state="CREATING", tags=tags)


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


def launch_request(
    source: Server,
    image_id: str,
    count: int,
    instance_type: str,
    name: str,
    tags: dict[str, str],
    client_token: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The RunInstances request of a tier's new servers: placed, networked and logged in exactly like the source.

    Preflight sends this same request with DryRun, so the cloud checks what the launch will really ask.
    """
    request: dict[str, Any] = {
        "Placement": {"Zone": source.zone, "ProjectId": source.project_id},
        "ImageId": image_id,
        "InstanceType": instance_type,
        "InstanceCount": count,
        "InstanceName": name,
        "VirtualPrivateCloud": {"VpcId": source.vpc_id, "SubnetId": source.subnet_id},
        "SecurityGroupIds": source.security_group_ids,
        "InternetAccessible": internet_like(source),
        "TagSpecification": [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        "DryRun": dry_run,
    }
    if client_token:
        request["ClientToken"] = client_token
    # Log in as on the source: its key pairs, or (a password server, e.g. Windows) the image's own login.
    request["LoginSettings"] = {"KeyIds": source.key_ids} if source.key_ids else {"KeepImageLogin": "TRUE"}
    return request


def internet_like(source: Server) -> dict[str, Any]:
    """The source's InternetAccessible as RunInstances takes it (charge type, bandwidth, public IP or not)."""
    members = ("InternetChargeType", "InternetMaxBandwidthOut", "PublicIpAssigned", "BandwidthPackageId")
    copied = {k: source.internet_accessible[k] for k in members if source.internet_accessible.get(k) is not None}
    copied.setdefault("InternetMaxBandwidthOut", source.bandwidth_out)
    return copied


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
) -> list[str]:
    """Launch `count` servers from the image (a retry with the same ClientToken adopts the first launch)."""
    request = launch_request(source, image_id, count, instance_type, name, tags, client_token)
    return call_json(clients_for(source.region).cvm, "RunInstances", request)["InstanceIdSet"]


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
def terminate_servers(region: str, instance_ids: list[str], timeout: float, poll: float = 2.0) -> list[str]:
    """Terminate servers (ignoring ones already going); returns the ids it asked to terminate. TerminateInstances
    refuses a server still launching (PENDING) or changing state: those are waited for first, at most `timeout` s."""
    servers = wait_until(
        lambda: describe_servers(region, instance_ids),
        done=lambda found: not any(s.state in SERVER_BUSY for s in found),
        failed=lambda _: None,
        what=f"{len(instance_ids)} server(s) to leave {'/'.join(SERVER_BUSY)} before they are terminated",
        timeout=timeout,
        first_delay=min(poll, 0.2),
        max_delay=poll,
    )
    alive = [s.instance_id for s in servers if s.state not in ("TERMINATING", "TERMINATED")]
    for start in range(0, len(alive), DESCRIBE_BATCH):
        call_json(clients_for(region).cvm, "TerminateInstances", {"InstanceIds": alive[start : start + DESCRIBE_BATCH]})
    return alive


def image_state(region: str, image_id: str) -> str | None:
    """The image's ImageState; None: no such image (deleted)."""
    found = call_json(clients_for(region).cvm, "DescribeImages", {"ImageIds": [image_id]})["ImageSet"]
    return str(found[0]["ImageState"]) if found else None


@task(name="delete-image", cache_policy=NO_CACHE)
@retrying()
def delete_image(region: str, image_id: str, timeout: float, poll: float = 2.0) -> bool:
    """Delete the image; False when it is gone already. DeleteImages refuses an image still being created (or
    copied, imported, in use): it is waited for first, at most `timeout` s (it ends NORMAL or CREATEFAILED)."""
    state = wait_until(
        lambda: image_state(region, image_id),
        done=lambda found: found not in IMAGE_BUSY,
        failed=lambda _: None,
        what=f"image {image_id} to leave {'/'.join(IMAGE_BUSY)} before it is deleted",
        timeout=timeout,
        first_delay=min(poll, 0.2),
        max_delay=poll,
    )
    if state is None:
        return False
    call_json(clients_for(region).cvm, "DeleteImages", {"ImageIds": [image_id]})
    return True


def tagged_servers(region: str, tags: dict[str, str]) -> list[str]:
    """Ids of the servers carrying every tag (terminated ones excluded)."""
    return [s.instance_id for s in describe_servers(region, filters=tag_filters(tags)) if s.state != "TERMINATED"]


@task(name="terminate-tagged-servers", cache_policy=NO_CACHE)
@retrying()
def terminate_tagged(region: str, tags: dict[str, str], timeout: float, poll: float = 2.0) -> list[str]:
    """Terminate every server carrying the tags and wait until they are going (each wait at most `timeout` s);
    returns their ids.

    Found by tag, not by the ids a launch answered: a launch whose answer was lost is found too.
    """
    ids = tagged_servers(region, tags)
    if ids:
        terminate_servers.fn(region, ids, timeout, poll)
        wait_until(
            lambda: describe_servers(region, ids),
            done=lambda left: all(s.state in SERVER_GOING for s in left),
            failed=lambda _: None,
            what=f"{len(ids)} server(s) to terminate",
            timeout=timeout,
            first_delay=min(poll, 0.2),
            max_delay=poll,
        )
    return ids


def tagged_images(region: str, tags: dict[str, str]) -> list[str]:
    filters = [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}, *tag_filters(tags)]
    return [
        i["ImageId"] for i in call_json(clients_for(region).cvm, "DescribeImages", {"Filters": filters})["ImageSet"]
    ]


@task(name="delete-tagged-images", cache_policy=NO_CACHE)
@retrying()
def delete_tagged_images(region: str, tags: dict[str, str], timeout: float, poll: float = 2.0) -> list[str]:
    """Delete every private image carrying the tags (a run's image, also one whose CreateImage answer was lost),
    each waited for while it is still being created (at most `timeout` s)."""
    ids = tagged_images(region, tags)
    for image_id in ids:
        delete_image.fn(region, image_id, timeout, poll)
    return ids
