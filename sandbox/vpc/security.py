"""Security groups: their lifecycle, their rules, and the check the data plane enforces them with.

A mixin of `VpcBackend` (kept apart so that each module stays readable); the rule grammar itself
lives in `policies`.
"""

import ipaddress
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from sandbox.core.catalog import PROJECTS
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id
from sandbox.vpc import policies
from sandbox.vpc.policies import SecurityGroupPolicy
from sandbox.vpc.validation import check_id, check_name

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud
    from sandbox.vpc.backend import VpcState

SECURITY_GROUP_QUOTA = 50  # per region and project
POLICY_QUOTA = 200  # per direction of one group


class SecurityGroup(BaseModel):
    security_group_id: str
    region: str
    name: str
    description: str = ""
    project_id: int = 0
    is_default: bool = False
    ingress: list[SecurityGroupPolicy] = Field(default_factory=list)
    egress: list[SecurityGroupPolicy] = Field(default_factory=list)
    version: int = 0  # SecurityGroupPolicySet.Version, bumped on each change
    created_time: str
    update_time: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    def rules(self, direction: str) -> list[SecurityGroupPolicy]:
        return self.ingress if direction == "Ingress" else self.egress


class SecurityGroups:
    """Security-group actions of `VpcBackend` (state in `VpcState.security_groups`)."""

    cloud: "Cloud"
    state: "VpcState"

    def ensure_defaults(self, region: str) -> None:  # provided by VpcBackend
        raise NotImplementedError

    # ---- Security groups -------------------------------------------------------------------------
    def security_groups(self, region: str) -> list[SecurityGroup]:
        self.ensure_defaults(region)
        return [g for g in self.state.security_groups.values() if g.region == region]

    def security_group(self, region: str, group_id: str) -> SecurityGroup:
        """The group, or the API's error for a malformed or unknown id (cvm can validate SecurityGroupIds)."""
        self.ensure_defaults(region)
        check_id("SecurityGroupId", group_id, "sg", code="InvalidSecurityGroupID.Malformed")
        group = self.state.security_groups.get(group_id)
        if group is None or group.region != region:
            raise ApiError("ResourceNotFound", f"The security group `{group_id}` does not exist in {region}.")
        return group

    def default_security_group(self, region: str) -> SecurityGroup:
        self.ensure_defaults(region)
        return next(g for g in self.security_groups(region) if g.is_default)

    def create_security_group(
        self, region: str, name: str, description: str, project_id: int, tags: dict[str, str]
    ) -> SecurityGroup:
        self.ensure_defaults(region)
        check_name("GroupName", name)
        if len(description) > 100:
            raise ApiError("InvalidParameterValue.TooLong", "GroupDescription is longer than 100 characters.")
        if project_id not in PROJECTS:
            raise ApiError("InvalidParameterValue", f"The project `{project_id}` does not exist.")
        in_project = [g for g in self.security_groups(region) if g.project_id == project_id]
        if len(in_project) >= SECURITY_GROUP_QUOTA:
            raise ApiError(
                "LimitExceeded", f"A project holds at most {SECURITY_GROUP_QUOTA} security groups per region."
            )
        now = self.cloud.clock.plain()
        group = SecurityGroup(
            security_group_id=new_id("sg"),
            region=region,
            name=name,
            description=description,
            project_id=project_id,
            created_time=now,
            update_time=now,
            tags=tags,
        )
        self.state.security_groups[group.security_group_id] = group
        return group

    def delete_security_group(self, region: str, group_id: str) -> None:
        group = self.security_group(region, group_id)
        if group.is_default:
            raise ApiError("UnsupportedOperation", f"The default security group `{group_id}` cannot be deleted.")
        users = [i.instance_id for i in self._instances() if group_id in i.security_group_ids]
        if users:
            raise ApiError("ResourceInUse", f"The security group `{group_id}` is bound to instances {users}.")
        referrers = [
            g.security_group_id
            for g in self.state.security_groups.values()
            if g.security_group_id != group_id and any(r.security_group_id == group_id for r in g.ingress + g.egress)
        ]
        if referrers:
            raise ApiError("ResourceInUse", f"The security group `{group_id}` is referenced by rules of {referrers}.")
        del self.state.security_groups[group_id]
        self.cloud.events.emit("security_group.deleted", group_id)

    def add_policies(
        self, region: str, group_id: str, direction: str, raw: list[dict[str, Any]], version: int | None
    ) -> None:
        """Append the rules (or insert them at their common PolicyIndex), refusing duplicates."""
        group = self.security_group(region, group_id)
        self._check_version(group, version)
        now = self.cloud.clock.plain()
        new = [policies.parse_policy(r, now) for r in raw]
        for rule in new:
            if rule.security_group_id:
                self.security_group(region, rule.security_group_id)
        indexes = {r.get("PolicyIndex") for r in raw}
        if len(indexes) > 1:
            raise ApiError("InvalidParameterValue", "Every rule of one request must carry the same PolicyIndex.")
        existing = group.rules(direction)
        seen = {r.identity() for r in existing}
        for rule in new:
            if rule.identity() in seen:
                raise ApiError(
                    "UnsupportedOperation.DuplicatePolicy",
                    f"The {direction} rule {rule.protocol} {rule.port} from {rule.source()} {rule.action} "
                    "already exists.",
                )
            seen.add(rule.identity())
        if len(existing) + len(new) > POLICY_QUOTA:
            raise ApiError(
                "LimitExceeded.SecurityGroupPolicySet", f"A group holds at most {POLICY_QUOTA} {direction} rules."
            )
        at = indexes.pop()
        position = len(existing) if at is None else at
        if not 0 <= position <= len(existing):
            raise ApiError("InvalidParameterValue.Range", f"PolicyIndex {at} is outside 0-{len(existing)}.")
        existing[position:position] = new
        self._changed(group, now)

    def delete_policies(
        self, region: str, group_id: str, direction: str, raw: list[dict[str, Any]], version: int | None
    ) -> None:
        """Delete by PolicyIndex, or by an exact rule (one way per request)."""
        group = self.security_group(region, group_id)
        self._check_version(group, version)
        existing = group.rules(direction)
        by_index = [r.get("PolicyIndex") is not None for r in raw]
        if any(by_index) and not all(by_index):
            raise ApiError("InvalidParameter.Coexist", "Delete rules either by PolicyIndex or by rule, not both.")
        if all(by_index):
            doomed = {r["PolicyIndex"] for r in raw}
            if any(not 0 <= i < len(existing) for i in doomed):
                raise ApiError("InvalidParameterValue.Range", f"A PolicyIndex is outside 0-{len(existing) - 1}.")
        else:
            identities = [r.identity() for r in existing]
            doomed = set()
            for wanted in (policies.parse_policy(r, "") for r in raw):
                if wanted.identity() not in identities:
                    raise ApiError("ResourceNotFound", f"The security group has no such {direction} rule.")
                doomed.add(identities.index(wanted.identity()))
        existing[:] = [r for i, r in enumerate(existing) if i not in doomed]
        self._changed(group, self.cloud.clock.plain())

    def _check_version(self, group: SecurityGroup, version: int | None) -> None:
        if version is not None and version != group.version:
            raise ApiError(
                "UnsupportedOperation.VersionMismatch",
                f"Version {version} is not the current version {group.version} of `{group.security_group_id}`.",
            )

    def _changed(self, group: SecurityGroup, now: str) -> None:
        group.version += 1
        group.update_time = now
        self.cloud.events.emit("security_group.changed", group.security_group_id)

    def _instances(self) -> list[Any]:
        # cvm may be absent (or still growing its state) while the services are built in parallel.
        cvm = self.cloud.backends.get("cvm")
        return list(getattr(getattr(cvm, "state", None), "instances", {}).values())

    # ---- Enforcement, used by the data plane --------------------------------------------------
    def admits(self, security_group_ids: list[str], source_ip: str, port: int, protocol: str = "TCP") -> bool:
        """Would these groups let a packet from `source_ip` reach `port`? (ingress, first match decides)

        Groups are evaluated in the order they are bound, each group's rules in order; a rule whose
        source is a security group matches the addresses of the instances in that group. No match
        means the packet is dropped, as on the real cloud.
        """
        try:
            source = ipaddress.IPv4Address(source_ip)
        except ValueError:
            return False
        for group_id in security_group_ids:
            group = self.state.security_groups.get(group_id)
            for rule in group.ingress if group else []:
                if not (policies.protocol_matches(rule.protocol, protocol) and policies.port_matches(rule.port, port)):
                    continue
                if rule.cidr_block and policies.cidr_matches(rule.cidr_block, source):
                    return rule.action == "ACCEPT"
                if rule.security_group_id and source_ip in self._addresses_in(rule.security_group_id):
                    return rule.action == "ACCEPT"
        return False

    def _addresses_in(self, group_id: str) -> set[str]:
        return {
            address
            for instance in self._instances()
            if group_id in instance.security_group_ids
            for address in (instance.private_ip, getattr(instance, "public_ip", None))
            if address
        }
