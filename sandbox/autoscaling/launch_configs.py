"""Launch configuration rules: what an Auto Scaling group launches (CreateLaunchConfiguration and friends)."""

from typing import TYPE_CHECKING, Any

from sandbox.autoscaling.common import check_id, check_name, cvm_of, in_range, one_of, tags_of, vpc_of
from sandbox.autoscaling.models import AsState, LaunchConfiguration
from sandbox.core.catalog import INSTANCE_TYPES, PROJECTS
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id
from sandbox.cvm.passwords import check_password, hash_password

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

CHARGE_TYPES = ("POSTPAID_BY_HOUR", "SPOTPAID", "PREPAID")
NAME_BYTES = 60
MAX_TYPES = 10
USER_DATA_BYTES = 16 * 1024


class LaunchConfigRules:
    state: AsState
    cloud: "Cloud"

    def launch_configuration(
        self, region: str, lc_id: str, code: str = "ResourceNotFound.LaunchConfigurationIdNotFound"
    ) -> LaunchConfiguration:
        check_id("asc", lc_id)
        lc = self.state.launch_configurations.get(lc_id)
        if lc is None or lc.region != region:
            raise ApiError(code, f"The launch configuration `{lc_id}` does not exist.")
        return lc

    def launch_configurations(self, region: str) -> list[LaunchConfiguration]:
        return [lc for lc in self.state.launch_configurations.values() if lc.region == region]

    def create_launch_configuration(self, region: str, p: dict[str, Any]) -> LaunchConfiguration:
        name = check_name("LaunchConfigurationName", p["LaunchConfigurationName"], NAME_BYTES)
        if any(lc.name == name for lc in self.launch_configurations(region)):
            raise ApiError(
                "InvalidParameterValue.LaunchConfigurationNameDuplicated",
                f"A launch configuration named `{name}` already exists.",
            )
        if p.get("ImageId") and p.get("ImageFamily"):
            raise ApiError("InvalidParameter.Conflict", "Give ImageId or ImageFamily, not both.")
        if not p.get("ImageId"):
            raise ApiError(
                "InvalidParameter.MustOneParameter",
                "ImageId is required (the sandbox has no image families: ImageFamily is not emulated).",
            )
        if p.get("InstanceType") and p.get("InstanceTypes"):
            raise ApiError("InvalidParameter.Conflict", "Give InstanceType or InstanceTypes, not both.")
        if not (p.get("InstanceType") or p.get("InstanceTypes")):
            raise ApiError("InvalidParameter.MustOneParameter", "Give InstanceType or InstanceTypes.")
        project_id = p.get("ProjectId", 0)
        if project_id not in PROJECTS:
            raise ApiError("InvalidParameterValue.ProjectIdNotFound", f"The project `{project_id}` does not exist.")
        now = self.cloud.clock.iso()
        lc = LaunchConfiguration(
            launch_configuration_id=new_id("asc"),
            region=region,
            name=name,
            project_id=project_id,
            image_id=p["ImageId"],
            instance_types=[p["InstanceType"]] if p.get("InstanceType") else list(p["InstanceTypes"]),
            created_time=now,
            updated_time=now,
            tags=tags_of(p.get("Tags")),
        )
        self._apply_members(region, lc, p)
        self.state.launch_configurations[lc.launch_configuration_id] = lc
        return lc

    def modify_launch_configuration(self, region: str, p: dict[str, Any]) -> LaunchConfiguration:
        lc = self.launch_configuration(region, p["LaunchConfigurationId"])
        draft = lc.model_copy(deep=True)
        draft.password_hash = lc.password_hash
        if "LaunchConfigurationName" in p:
            name = check_name("LaunchConfigurationName", p["LaunchConfigurationName"], NAME_BYTES)
            if any(o.name == name and o is not lc for o in self.launch_configurations(region)):
                raise ApiError(
                    "InvalidParameterValue.LaunchConfigurationNameDuplicated",
                    f"A launch configuration named `{name}` already exists.",
                )
            draft.name = name
        if p.get("ImageId"):
            draft.image_id = p["ImageId"]
        if p.get("InstanceTypes"):
            draft.instance_types = list(p["InstanceTypes"])
        self._apply_members(region, draft, p)
        draft.version_number += 1
        draft.updated_time = self.cloud.clock.iso()
        self.state.launch_configurations[lc.launch_configuration_id] = draft
        return draft

    def delete_launch_configuration(self, region: str, lc_id: str) -> None:
        lc = self.launch_configuration(region, lc_id)
        users = [g.group_id for g in self.state.groups.values() if g.launch_configuration_id == lc_id]
        if users:
            raise ApiError(
                "ResourceInUse.LaunchConfigurationIdInUse",
                f"The launch configuration `{lc_id}` is used by the scaling group(s) {', '.join(users)}.",
            )
        del self.state.launch_configurations[lc.launch_configuration_id]

    # ---- members shared by Create and Modify -------------------------------------------------------
    def _apply_members(self, region: str, lc: LaunchConfiguration, p: dict[str, Any]) -> None:
        """Check and apply every optional member given in `p` onto `lc` (checks of the result included)."""
        cvm = cvm_of(self.cloud)
        try:
            image = cvm.image(region, lc.image_id)
        except ApiError as error:
            code = (
                "InvalidParameterValue.InvalidImageId"
                if "Malformed" in error.code
                else ("InvalidParameterValue.ImageNotFound")
            )
            raise ApiError(code, error.message) from None
        if image.state != "NORMAL":
            raise ApiError("InvalidParameterValue.ImageNotFound", f"The image `{image.image_id}` is {image.state}.")
        if len(lc.instance_types) > MAX_TYPES:
            raise ApiError("InvalidParameterValue.LimitExceeded", f"InstanceTypes lists at most {MAX_TYPES} types.")
        for instance_type in lc.instance_types:
            if instance_type not in INSTANCE_TYPES:
                raise ApiError(
                    "InvalidParameterValue.InvalidInstanceType", f"The instance type `{instance_type}` does not exist."
                )
        if "InstanceTypesCheckPolicy" in p:
            lc.instance_types_check_policy = one_of(
                "InstanceTypesCheckPolicy", p["InstanceTypesCheckPolicy"], ("ALL", "ANY")
            )
        if "InstanceChargeType" in p:
            lc.instance_charge_type = one_of("InstanceChargeType", p["InstanceChargeType"], CHARGE_TYPES)
        if "SystemDisk" in p:
            disk = {"DiskType": "CLOUD_PREMIUM", "DiskSize": 50, **p["SystemDisk"]}
            in_range("SystemDisk.DiskSize", int(disk["DiskSize"]), 20, 1024)
            lc.system_disk = disk
        if "DataDisks" in p:
            lc.data_disks = list(p["DataDisks"])
        if "InternetAccessible" in p:
            internet = p["InternetAccessible"]
            lc.bandwidth_out = in_range(
                "InternetAccessible.InternetMaxBandwidthOut", internet.get("InternetMaxBandwidthOut", 0), 0, 200
            )
            lc.internet_charge_type = internet.get("InternetChargeType", lc.internet_charge_type)
            lc.public_ip_assigned = bool(internet.get("PublicIpAssigned", lc.bandwidth_out > 0))
        if "LoginSettings" in p:
            self._login(region, lc, p["LoginSettings"], image.platform)
        if "SecurityGroupIds" in p:
            groups = vpc_of(self.cloud)
            groups.ensure_defaults(region)
            for group_id in p["SecurityGroupIds"]:
                found = groups.state.security_groups.get(group_id)
                if found is None or found.region != region:
                    raise ApiError(
                        "InvalidParameterValue.InvalidSecurityGroupId",
                        f"The security group `{group_id}` does not exist.",
                    )
            lc.security_group_ids = list(dict.fromkeys(p["SecurityGroupIds"]))
        if "UserData" in p:
            if len(p["UserData"].encode()) > USER_DATA_BYTES:
                raise ApiError("InvalidParameterValue.UserDataSizeExceeded", "UserData is larger than 16 KB.")
            lc.user_data = p["UserData"]
        if "InstanceNameSettings" in p:
            settings = p["InstanceNameSettings"]
            lc.instance_name = check_name("InstanceNameSettings.InstanceName", settings["InstanceName"], 108)
            lc.instance_name_style = one_of(
                "InstanceNameSettings.InstanceNameStyle",
                settings.get("InstanceNameStyle", "ORIGINAL"),
                ("ORIGINAL", "UNIQUE"),
            )
        if "HostNameSettings" in p:
            lc.host_name = p["HostNameSettings"]["HostName"]
        if "InstanceTags" in p:
            lc.instance_tags = tags_of(p["InstanceTags"])
        if "CamRoleName" in p:
            lc.cam_role_name = p["CamRoleName"]
        if "DiskTypePolicy" in p:
            lc.disk_type_policy = one_of("DiskTypePolicy", p["DiskTypePolicy"], ("ORIGINAL", "AUTOMATIC"))

    def _login(self, region: str, lc: LaunchConfiguration, login: dict[str, Any], platform: str) -> None:
        keys, keep, password = login.get("KeyIds") or [], bool(login.get("KeepImageLogin")), login.get("Password")
        if sum(bool(x) for x in (keys, keep, password)) > 1:
            raise ApiError("InvalidParameter.Conflict", "LoginSettings takes one of Password, KeyIds, KeepImageLogin.")
        for key_id in keys:
            try:
                cvm_of(self.cloud).key_pair(region, key_id)
            except ApiError as error:
                raise ApiError("InvalidParameterValue", error.message) from None
        if password:
            check_password(password, platform)
        lc.key_ids, lc.keep_image_login = list(keys), keep
        lc.password_hash = hash_password(password) if password else None
