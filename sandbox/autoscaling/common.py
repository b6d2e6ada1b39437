"""What every Auto Scaling module shares: id formats, limits, lookups of the other services' backends."""

import re
from typing import TYPE_CHECKING, Any

from sandbox.core.errors import ApiError
from sandbox.core.query import apply_filters

if TYPE_CHECKING:
    from sandbox.clb.backend import ClbBackend
    from sandbox.core.emulated_cloud import Cloud
    from sandbox.cvm.backend import CvmBackend
    from sandbox.vpc.backend import VpcBackend

VERSION = "2018-04-19"
MAX_SIZE = 2000  # MinSize / MaxSize / DesiredCapacity upper bound
ID_CODES = {
    "asc": "InvalidParameterValue.InvalidLaunchConfigurationId",
    "asg": "InvalidParameterValue.InvalidAutoScalingGroupId",
    "asa": "InvalidParameterValue.InvalidActivityId",
    "asst": "InvalidParameterValue.InvalidScheduledActionId",
    "asp": "InvalidParameterValue.InvalidAutoScalingPolicyId",
    "ins": "InvalidParameterValue.InvalidInstanceId",
}


def check_id(prefix: str, value: str) -> str:
    if not re.fullmatch(rf"{prefix}-[a-z0-9]{{8}}", value):
        raise ApiError(ID_CODES[prefix], f"The id `{value}` is malformed.")
    return value


def check_name(member: str, value: str, most: int) -> str:
    if not value:
        raise ApiError("InvalidParameterValue.TooShort", f"`{member}` must not be empty.")
    if len(value.encode()) > most:
        raise ApiError("InvalidParameterValue.TooLong", f"`{member}` `{value}` is longer than {most} bytes.")
    return value


def one_of(member: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ApiError(
            "InvalidParameterValue", f"The value `{value}` of `{member}` must be one of {', '.join(allowed)}."
        )
    return value


def in_range(member: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ApiError("InvalidParameterValue.Range", f"`{member}` ({value}) must be between {low} and {high}.")
    return value


def tags_of(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def cvm_of(cloud: "Cloud") -> "CvmBackend":
    return cloud.backends["cvm"]  # type: ignore[return-value]


def clb_of(cloud: "Cloud") -> "ClbBackend":
    return cloud.backends["clb"]  # type: ignore[return-value]


def vpc_of(cloud: "Cloud") -> "VpcBackend":
    return cloud.backends["vpc"]  # type: ignore[return-value]


def describe(
    items: list[Any],
    ids: list[str] | None,
    id_of: Any,
    filters: list[dict[str, Any]] | None,
    fields: dict[str, Any],
    offset: int | None,
    limit: int | None,
    tags: Any = None,
    vague: dict[str, Any] | None = None,
) -> tuple[int, list[Any]]:
    """The Describe pattern of the as API: ids or Filters (not both), vague (substring) filters, Offset/Limit
    (Limit default 20, at most 100). Returns (TotalCount, the page)."""
    if ids and filters:
        raise ApiError("InvalidParameter.Conflict", "Ids and Filters cannot be used together.")
    if ids:
        wanted = set(ids)
        items = [i for i in items if id_of(i) in wanted]
    plain = []
    for f in filters or []:
        name = f["Name"]
        if vague and name in vague:
            values = [v.lower() for v in f.get("Values") or []]
            items = [i for i in items if any(v in vague[name](i).lower() for v in values)]
        elif name in fields or (tags is not None and (name.startswith("tag:") or name in ("tag-key", "tag-value"))):
            plain.append(f)
        else:
            raise ApiError("InvalidParameterValue.Filter", f"The filter `{name}` is not supported.")
    items = apply_filters(items, plain, fields, tags=tags)
    offset = 0 if offset is None else offset
    limit = 20 if limit is None else limit
    if offset < 0:
        raise ApiError("InvalidParameterValue", f"Offset ({offset}) must not be negative.")
    if not 1 <= limit <= 100:
        raise ApiError("InvalidParameterValue", f"Limit ({limit}) must be between 1 and 100.")
    return len(items), items[offset : offset + limit]


def tag_set(tags: dict[str, str], resource_type: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v, "ResourceType": resource_type} for k, v in tags.items()]
