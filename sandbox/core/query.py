"""What every Describe action shares: Filters, tag filters, Offset/Limit pagination."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sandbox.core.errors import ApiError, invalid_value

T = TypeVar("T")

# A filter name maps to a function giving the values of a resource it matches against.
FieldGetter = Callable[[Any], Iterable[str] | str | None]


def apply_filters(
    items: Iterable[T],
    filters: Sequence[dict[str, Any]] | None,
    fields: dict[str, FieldGetter],
    tags: Callable[[T], dict[str, str]] | None = None,
) -> list[T]:
    """Keep items matching every filter (AND) on any of its values (OR).

    `tag-key`, `tag:<key>` and `tag-value` are handled for any resource when `tags` is given.
    An unknown filter name is `InvalidFilter`, as on the real API.
    """
    result = list(items)
    for f in filters or []:
        name, values = f["Name"], set(f.get("Values") or [])
        if tags is not None and (name.startswith("tag:") or name in ("tag-key", "tag-value")):
            result = [i for i in result if _tag_matches(tags(i), name, values)]
            continue
        getter = fields.get(name)
        if getter is None:
            raise ApiError("InvalidFilter", f"The filter `{name}` is not supported.")
        result = [i for i in result if _values(getter(i)) & values]
    return result


def _values(value: Iterable[str] | str | None) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str | int | bool):
        return {str(value)}
    return {str(v) for v in value}


def _tag_matches(tags: dict[str, str], name: str, values: set[str]) -> bool:
    if name == "tag-key":
        return bool(set(tags) & values)
    if name == "tag-value":
        return bool(set(tags.values()) & values)
    key = name.removeprefix("tag:")
    return key in tags and tags[key] in values


def paginate(items: list[T], offset: int | None, limit: int | None, default: int = 20, most: int = 100) -> list[T]:
    offset = 0 if offset is None else offset
    limit = default if limit is None else limit
    if offset < 0:
        raise invalid_value("Offset", offset)
    if not 0 < limit <= most:
        raise invalid_value("Limit", limit, f"it must be between 1 and {most}")
    return items[offset : offset + limit]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]
