"""Image rules of the CVM backend: CreateImage (CREATING -> NORMAL | CREATEFAILED), lookups, deletion."""

import re
from typing import TYPE_CHECKING

from sandbox.core.catalog import PUBLIC_IMAGES, PublicImage
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id
from sandbox.cvm.errors import dry_run_passed, state_refused
from sandbox.cvm.models import CvmState, Image

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud
    from sandbox.cvm.models import Instance

IMAGE_ID = re.compile(r"^img-[a-z0-9]{8}$")
IMAGE_NAME_MAX = 60
IMAGE_QUOTA = 500  # private images per region, as on the real cloud
PUBLIC_CREATED_TIME = "2024-01-01T00:00:00Z"  # public images predate everything in the sandbox


def public_image(region: str, spec: PublicImage) -> Image:
    return Image(
        image_id=spec.image_id,
        region=region,
        image_name=spec.image_name,
        image_description=spec.image_name,
        os_name=spec.os_name,
        platform=spec.platform,
        architecture=spec.architecture,
        image_size=spec.image_size,
        state="NORMAL",
        created_time=PUBLIC_CREATED_TIME,
        image_type="PUBLIC_IMAGE",
    )


class ImageRules:
    """Mixed into CvmBackend (which provides `state`, `cloud` and `instance`)."""

    state: CvmState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def instance(self, region: str, instance_id: str) -> "Instance": ...  # provided by InstanceRules

    def image(self, region: str, image_id: str) -> Image:
        """A private image of the region, or a public one (shaped as an Image); the real not-found codes."""
        if not IMAGE_ID.match(image_id):
            raise ApiError("InvalidImageId.Malformed", f"The image id `{image_id}` is malformed.")
        if image_id in PUBLIC_IMAGES:
            return public_image(region, PUBLIC_IMAGES[image_id])
        image = self.state.images.get(image_id)
        if image is None or image.region != region:
            raise ApiError("InvalidImageId.NotFound", f"The image `{image_id}` does not exist.")
        return image

    def images(self, region: str) -> list[Image]:
        """Every image visible in the region: private ones (newest first), then the public catalog."""
        private = [i for i in self.state.images.values() if i.region == region]
        return [*reversed(private), *(public_image(region, p) for p in PUBLIC_IMAGES.values())]

    def create_image(
        self,
        region: str,
        instance_id: str,
        name: str,
        description: str,
        tags: dict[str, str],
        request_id: str,
        async_failure: str | None,
        dry_run: bool = False,
    ) -> Image:
        if not name:
            raise ApiError("InvalidParameterValue", "The image name must not be empty.")
        if len(name) > IMAGE_NAME_MAX:
            raise ApiError(
                "InvalidParameterValue.TooLong", f"The image name is longer than {IMAGE_NAME_MAX} characters."
            )
        instance = self.instance(region, instance_id)
        if instance.state not in ("RUNNING", "STOPPED"):
            raise state_refused(instance.instance_id, instance.state)
        private = [i for i in self.state.images.values() if i.region == region]
        if any(i.image_name == name for i in private):
            raise ApiError("InvalidImageName.Duplicate", f"An image named `{name}` already exists.")
        if any(i.source_instance_id == instance_id and i.state == "CREATING" for i in private):
            raise ApiError(
                "OperationDenied.InstanceOperationInProgress",
                f"An image of the instance `{instance_id}` is being created; try again later.",
            )
        if len(private) >= IMAGE_QUOTA:
            raise ApiError("ImageQuotaLimitExceeded", f"The region already holds {IMAGE_QUOTA} custom images.")
        if dry_run:
            raise dry_run_passed()
        image = Image(
            image_id=new_id("img"),
            region=region,
            image_name=name,
            image_description=description,
            source_instance_id=instance_id,
            os_name=instance.os_name,
            platform=instance.platform,
            image_size=instance.system_disk_size,
            ready_at=self.cloud.clock.due("image.create"),
            failure=async_failure,
            created_time=self.cloud.clock.iso(),
            tags=tags,
            password_hash=instance.password_hash,  # what KeepImageLogin gives servers launched from it
        )
        self.state.images[image.image_id] = image
        # The data plane copies the server's disk now: the image holds the disk as it was at request time.
        self.cloud.events.emit("image.creating", image, instance)
        return image

    def delete_images(self, region: str, image_ids: list[str], dry_run: bool = False) -> None:
        doomed = []
        for image_id in dict.fromkeys(image_ids):
            image = self.image(region, image_id)
            if image.image_type == "PUBLIC_IMAGE":
                raise ApiError(
                    "UnauthorizedOperation.ImageNotBelongToAccount",
                    f"The image `{image_id}` does not belong to this account.",
                )
            if image.state == "CREATING":
                raise ApiError("InvalidImageId.IncorrectState", f"The image `{image_id}` is still being created.")
            doomed.append(image)
        if dry_run:
            raise dry_run_passed()
        for image in doomed:
            del self.state.images[image.image_id]
            self.cloud.events.emit("image.deleted", image)

    def _advance_images(self, now: float) -> float | None:
        """CREATING images whose time has come become NORMAL (or CREATEFAILED under a fault)."""
        upcoming: float | None = None
        for image in self.state.images.values():
            if image.state != "CREATING" or image.ready_at is None:
                continue
            if image.ready_at > now:
                upcoming = image.ready_at if upcoming is None else min(upcoming, image.ready_at)
                continue
            image.state = "CREATEFAILED" if image.failure else "NORMAL"
            image.ready_at = None
            self.cloud.events.emit("image.state", image)
        return upcoming
