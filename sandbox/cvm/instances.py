"""Instance rules of the CVM backend: launch (RunInstances), power operations, termination, lookups.

Every operation is checked in full for every instance of a call before anything changes. The
asynchronous part is a recorded transition (`pending_state` at `pending_at`) that `advance()`
applies; every state change is announced with `cloud.events.emit("instance.state", instance)`.

Termination: TERMINATING (announced), then at `clock.due("instance.terminate")` the instance is
removed from the state, its addresses are released and it is announced once more with state
TERMINATED (a pay-as-you-go instance simply disappears from DescribeInstances on the real cloud).
"""

import re
import uuid
from typing import TYPE_CHECKING

from sandbox.core.catalog import INSTANCE_TYPES, PROJECTS, zone_of
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id
from sandbox.cvm.errors import dry_run_passed, state_refused
from sandbox.cvm.launch import LaunchSpec, default_host_name, free_addresses, instance_names
from sandbox.cvm.models import CvmState, Image, Instance
from sandbox.cvm.passwords import check_password, hash_password

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud
    from sandbox.cvm.models import KeyPair
    from sandbox.vpc.backend import Subnet, VpcBackend

INSTANCE_ID = re.compile(r"^ins-[a-z0-9]{8}$")
INSTANCE_TYPE = re.compile(r"^[A-Z][A-Z0-9]*\.[A-Z0-9]+$")
MAX_INSTANCE_COUNT = 500  # RunInstances' documented range is [1, 500]
MAX_IDS_PER_CALL = 100
MAX_SECURITY_GROUPS = 5
CHARGE_TYPES = ("POSTPAID_BY_HOUR", "PREPAID", "SPOTPAID")
PREPAID_PERIODS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 24, 36, 48, 60)  # months
RESTRICT_STATES = ("NORMAL", "EXPIRED", "PROTECTIVELY_ISOLATED")


class InstanceRules:
    """Mixed into CvmBackend (which provides `state`, `cloud`, `image` and `key_pair`)."""

    state: CvmState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def image(self, region: str, image_id: str) -> Image: ...  # provided by ImageRules

        def key_pair(self, region: str, key_id: str) -> "KeyPair": ...  # provided by CvmBackend

    @property
    def vpc(self) -> "VpcBackend":
        return self.cloud.backends["vpc"]  # type: ignore[return-value]

    # ---- lookups ---------------------------------------------------------------------------
    def instance(self, region: str, instance_id: str) -> Instance:
        check_instance_id(instance_id)
        instance = self.state.instances.get(instance_id)
        if instance is None or instance.region != region:
            raise ApiError("InvalidInstanceId.NotFound", f"The instance `{instance_id}` does not exist.")
        return instance

    def instances(self, region: str) -> list[Instance]:
        return [i for i in self.state.instances.values() if i.region == region]

    def instances_by_ids(self, region: str, instance_ids: list[str]) -> list[Instance]:
        """For write actions: at most 100 ids, every one must exist (duplicates collapse)."""
        check_id_count(instance_ids)
        return [self.instance(region, i) for i in dict.fromkeys(instance_ids)]

    # ---- RunInstances ----------------------------------------------------------------------
    def run_instances(
        self,
        region: str,
        spec: LaunchSpec,
        count: int,
        request_id: str,
        async_failure: str | None = None,
        client_token: str | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Launch `count` instances (PENDING); the same ClientToken answers the first call's ids again."""
        token_key = None
        if client_token is not None:
            if len(client_token) > 64 or not client_token.isascii():
                raise ApiError("InvalidClientToken.TooLong", "The ClientToken must be at most 64 ASCII characters.")
            token_key = f"{region}/{client_token}"
            if not dry_run and token_key in self.state.client_tokens:
                return list(self.state.client_tokens[token_key])

        image, subnet, security_groups = self._check_launch(region, spec, count)
        if dry_run:
            raise dry_run_passed()

        now = self.cloud.clock.now()
        created = self.cloud.clock.iso(now)
        due = self.cloud.clock.due("instance.launch")
        expired = None
        if spec.charge_type == "PREPAID":
            expired = self.cloud.clock.iso(now + 30 * 86400 * (spec.prepaid_period or 1))  # months of 30 days
        public = spec.bandwidth_out > 0 and spec.public_ip_assigned is not False
        password_hash = _login_password_hash(spec, image)
        launched = []
        for name in instance_names(spec.instance_name, count):
            private_ip = self.vpc.allocate_ip(subnet)
            instance = Instance(
                instance_id=new_id("ins"),
                region=region,
                zone=spec.zone,
                project_id=spec.project_id,
                instance_type=spec.instance_type,
                instance_name=name,
                image_id=image.image_id,
                os_name=image.os_name,
                platform=image.platform,
                pending_state="RUNNING",
                pending_at=due,
                failure=async_failure,
                latest_operation="RunInstances",
                latest_operation_state="OPERATING",
                latest_operation_request_id=request_id,
                vpc_id=subnet.vpc_id,
                subnet_id=subnet.subnet_id,
                private_ip=private_ip,
                public_ip=self.vpc.allocate_public_ip() if public else None,
                bandwidth_out=spec.bandwidth_out,
                internet_charge_type=spec.internet_charge_type
                or ("BANDWIDTH_PREPAID" if spec.charge_type == "PREPAID" else "TRAFFIC_POSTPAID_BY_HOUR"),
                security_group_ids=security_groups,
                key_ids=list(spec.key_ids),
                expired_time=expired,
                charge_type=spec.charge_type,
                renew_flag=spec.renew_flag if spec.charge_type == "PREPAID" else None,
                client_token=client_token,
                created_time=created,
                tags=dict(spec.tags),
                uuid=str(uuid.uuid4()),
                host_name=spec.host_name or default_host_name(private_ip, image.platform),
                system_disk_type=spec.system_disk_type,
                system_disk_size=spec.system_disk_size,
                system_disk_id=new_id("disk"),
                disable_api_termination=spec.disable_api_termination,
                password_hash=password_hash,
            )
            self.state.instances[instance.instance_id] = instance
            launched.append(instance)
        if token_key is not None:
            self.state.client_tokens[token_key] = [i.instance_id for i in launched]
        for instance in launched:
            self.cloud.events.emit("instance.state", instance)
        return [i.instance_id for i in launched]

    def check_offer(self, region: str, spec: LaunchSpec, count: int) -> Image:
        """What RunInstances and InquiryPriceRunInstances both check: where, what type, how paid, how many, image."""
        if zone_of(region, spec.zone) is None:
            raise ApiError("InvalidZone.MismatchRegion", f"The zone `{spec.zone}` is not in the region `{region}`.")
        if spec.project_id not in PROJECTS:
            raise ApiError("InvalidProjectId.NotFound", f"The project `{spec.project_id}` does not exist.")
        if spec.charge_type not in CHARGE_TYPES:
            raise ApiError(
                "InvalidParameterValue", f"The value `{spec.charge_type}` of parameter `InstanceChargeType` is invalid."
            )
        if spec.charge_type == "PREPAID":
            if spec.prepaid_period is None:
                raise ApiError("MissingParameter", "A PREPAID instance needs `InstanceChargePrepaid.Period`.")
            if spec.prepaid_period not in PREPAID_PERIODS:
                raise ApiError("InvalidPeriod", f"The period `{spec.prepaid_period}` is not valid.")
        if not INSTANCE_TYPE.match(spec.instance_type):
            raise ApiError("InvalidInstanceType.Malformed", f"The instance type `{spec.instance_type}` is malformed.")
        if spec.instance_type not in INSTANCE_TYPES:
            raise ApiError(
                "InvalidParameterValue.InstanceTypeNotFound",
                f"The instance type `{spec.instance_type}` does not exist.",
            )
        if not 1 <= count <= MAX_INSTANCE_COUNT:
            raise ApiError("InvalidParameterValue.Range", f"InstanceCount must be between 1 and {MAX_INSTANCE_COUNT}.")
        if not 0 <= spec.bandwidth_out <= 200:
            raise ApiError("InvalidParameterValue.Range", "InternetMaxBandwidthOut must be between 0 and 200 Mbps.")
        image = self.image(region, spec.image_id)
        if image.state != "NORMAL":
            raise ApiError("InvalidImageId.IncorrectState", f"The image `{image.image_id}` is {image.state}.")
        return image

    def _check_launch(self, region: str, spec: LaunchSpec, count: int) -> tuple[Image, "Subnet", list[str]]:
        """Every RunInstances rule, before anything is allocated."""
        image = self.check_offer(region, spec, count)
        if spec.instance_name is not None and len(spec.instance_name) > 128:
            raise ApiError("InvalidInstanceName.TooLong", "The instance name is longer than 128 characters.")
        if spec.key_ids and spec.keep_image_login:
            raise ApiError("InvalidParameter.ParameterConflict", "KeyIds and KeepImageLogin cannot be used together.")
        if spec.key_ids and image.platform == "Windows":
            raise ApiError("UnsupportedOperation.KeyPairUnsupportedWindows", "Windows instances cannot use key pairs.")
        if spec.password is not None:
            if spec.key_ids or spec.keep_image_login:
                raise ApiError(
                    "InvalidParameterCombination",
                    "LoginSettings.Password cannot be used together with KeyIds or KeepImageLogin.",
                )
            check_password(spec.password.get_secret_value(), image.platform)
        for key_id in spec.key_ids:
            self.key_pair(region, key_id)
        subnet = self._launch_subnet(region, spec)
        if free_addresses(subnet) < count:
            raise ApiError(
                "FailedOperation.NoAvailableIpAddressCountInSubnet",
                f"The subnet `{subnet.subnet_id}` has {free_addresses(subnet)} free addresses, {count} are needed.",
            )
        return image, subnet, self._launch_security_groups(region, spec)

    def _launch_subnet(self, region: str, spec: LaunchSpec) -> "Subnet":
        vpc = self.vpc
        if spec.vpc_id is None or spec.subnet_id is None:
            return vpc.default_subnet(region, spec.zone)
        vpc.ensure_defaults(region)
        if not re.fullmatch(r"vpc-[a-z0-9]{8}", spec.vpc_id):
            raise ApiError("InvalidParameterValue.VpcIdMalformed", f"The VPC id `{spec.vpc_id}` is malformed.")
        if not re.fullmatch(r"subnet-[a-z0-9]{8}", spec.subnet_id):
            raise ApiError("InvalidParameterValue.SubnetIdMalformed", f"The subnet id `{spec.subnet_id}` is malformed.")
        found = vpc.state.vpcs.get(spec.vpc_id)
        if found is None or found.region != region:
            raise ApiError("InvalidParameterValue.VpcIdNotExist", f"The VPC `{spec.vpc_id}` does not exist.")
        subnet = vpc.state.subnets.get(spec.subnet_id)
        if subnet is None or subnet.region != region:
            raise ApiError("InvalidParameterValue.SubnetNotExist", f"The subnet `{spec.subnet_id}` does not exist.")
        if subnet.vpc_id != spec.vpc_id:
            raise ApiError(
                "InvalidParameterValue.VpcIdSubnetIdNotMatch",
                f"The subnet `{spec.subnet_id}` does not belong to the VPC `{spec.vpc_id}`.",
            )
        if subnet.zone != spec.zone:
            raise ApiError(
                "InvalidParameterValue.SubnetIdZoneIdNotMatch",
                f"The subnet `{spec.subnet_id}` is in `{subnet.zone}`, not in `{spec.zone}`.",
            )
        return subnet

    def _launch_security_groups(self, region: str, spec: LaunchSpec) -> list[str]:
        vpc = self.vpc
        vpc.ensure_defaults(region)
        groups = vpc.state.security_groups
        if spec.security_group_ids is None:
            return [next(g.security_group_id for g in groups.values() if g.region == region and g.is_default)]
        ids = list(dict.fromkeys(spec.security_group_ids))
        if len(ids) > MAX_SECURITY_GROUPS:
            raise ApiError("LimitExceeded.SingleUSGQuota", f"An instance takes at most {MAX_SECURITY_GROUPS} groups.")
        for group_id in ids:
            if not re.fullmatch(r"sg-[a-z0-9]{8}", group_id):
                raise ApiError("InvalidSgId.Malformed", f"The security group id `{group_id}` is malformed.")
            group = groups.get(group_id)
            if group is None or group.region != region:
                raise ApiError("InvalidSecurityGroupId.NotFound", f"The security group `{group_id}` does not exist.")
        return ids

    # ---- power operations and termination -----------------------------------------------------
    def stop_instances(self, region: str, instance_ids: list[str], request_id: str, failure: str | None) -> None:
        self._operate(
            region,
            instance_ids,
            "StopInstances",
            {"RUNNING"},
            "STOPPING",
            "STOPPED",
            "instance.stop",
            request_id,
            failure,
        )

    def start_instances(self, region: str, instance_ids: list[str], request_id: str, failure: str | None) -> None:
        self._operate(
            region,
            instance_ids,
            "StartInstances",
            {"STOPPED"},
            "STARTING",
            "RUNNING",
            "instance.start",
            request_id,
            failure,
        )

    def reboot_instances(self, region: str, instance_ids: list[str], request_id: str, failure: str | None) -> None:
        self._operate(
            region,
            instance_ids,
            "RebootInstances",
            {"RUNNING"},
            "REBOOTING",
            "RUNNING",
            "instance.reboot",
            request_id,
            failure,
        )

    def terminate_instances(self, region: str, instance_ids: list[str], request_id: str, failure: str | None) -> None:
        instances = self.instances_by_ids(region, instance_ids)
        for instance in instances:
            if instance.disable_api_termination:
                raise ApiError(
                    "UnsupportedOperation.InstancesProtected",
                    f"The instance `{instance.instance_id}` is protected from termination.",
                )
        allowed = {"RUNNING", "STOPPED", "LAUNCH_FAILED"}
        self._operate(
            region,
            instance_ids,
            "TerminateInstances",
            allowed,
            "TERMINATING",
            "TERMINATED",
            "instance.terminate",
            request_id,
            failure,
        )

    def _operate(
        self,
        region: str,
        instance_ids: list[str],
        operation: str,
        allowed: set[str],
        transitional: str,
        final: str,
        latency: str,
        request_id: str,
        failure: str | None,
    ) -> None:
        instances = self.instances_by_ids(region, instance_ids)
        for instance in instances:
            if instance.state not in allowed:
                raise state_refused(instance.instance_id, instance.state)
        due = self.cloud.clock.due(latency)
        for instance in instances:
            instance.previous_state = instance.state
            instance.state = transitional
            instance.pending_state, instance.pending_at, instance.failure = final, due, failure
            instance.latest_operation = operation
            instance.latest_operation_state = "OPERATING"
            instance.latest_operation_request_id = request_id
            instance.latest_operation_error_msg = ""
            self.cloud.events.emit("instance.state", instance)

    def _advance_instances(self, now: float) -> float | None:
        upcoming: float | None = None
        for instance in list(self.state.instances.values()):
            if instance.pending_at is None:
                continue
            if instance.pending_at > now:
                upcoming = instance.pending_at if upcoming is None else min(upcoming, instance.pending_at)
                continue
            self._finish(instance)
        return upcoming

    def _finish(self, instance: Instance) -> None:
        """Complete the instance's pending operation (successfully, or as a fault rule decided)."""
        final, failure = instance.pending_state, instance.failure
        instance.pending_state = instance.pending_at = instance.failure = None
        if failure:
            # A failed launch is terminal (LAUNCH_FAILED); any other failed operation leaves the state as it was.
            launching = instance.latest_operation == "RunInstances"
            instance.state = "LAUNCH_FAILED" if launching else (instance.previous_state or instance.state)
            instance.latest_operation_state = "FAILED"
            instance.latest_operation_error_msg = failure
        elif final == "TERMINATED":
            del self.state.instances[instance.instance_id]
            self.vpc.release_ip(instance.subnet_id, instance.private_ip)
            if instance.public_ip:
                self.vpc.release_public_ip(instance.public_ip)
            instance.state = "TERMINATED"
            instance.latest_operation_state = "SUCCESS"
        else:
            instance.state = final or instance.state
            instance.latest_operation_state = "SUCCESS"
        instance.previous_state = None
        self.cloud.events.emit("instance.state", instance)

    # ---- test helper (not an API) ----------------------------------------------------------------
    def set_restrict_state(self, instance_id: str, state: str, expired_time: str | None = None) -> Instance:
        """Isolate or expire a server (RestrictState / ExpiredTime), as billing would on the real cloud."""
        if state not in RESTRICT_STATES:
            raise ValueError(f"restrict state must be one of {RESTRICT_STATES}, not {state!r}")
        instance = self.state.instances.get(instance_id)
        if instance is None:
            raise KeyError(instance_id)
        instance.restrict_state = state
        if expired_time is not None:
            instance.expired_time = expired_time
        self.cloud.events.emit("instance.state", instance)
        return instance


def _login_password_hash(spec: LaunchSpec, image: Image) -> str | None:
    """The new servers' password, salted and hashed once per call: the one given, or the image's (KeepImageLogin)."""
    if spec.password is not None:
        return hash_password(spec.password.get_secret_value())
    return image.password_hash if spec.keep_image_login else None


def check_instance_id(instance_id: str) -> None:
    if not INSTANCE_ID.match(instance_id):
        raise ApiError("InvalidInstanceId.Malformed", f"The instance id `{instance_id}` is malformed.")


def check_id_count(ids: list[str]) -> None:
    if len(ids) > MAX_IDS_PER_CALL:
        raise ApiError("InvalidParameterValue.LimitExceeded", f"At most {MAX_IDS_PER_CALL} ids per request.")
