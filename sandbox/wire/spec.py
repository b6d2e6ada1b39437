"""Requests checked against each action's declared input, as Tencent's API gateway does.

The declarations are the provider's own (tccli's `api.json`), trimmed by `sandbox/specs/generate.py`
to the actions the sandbox emulates. GET requests arrive flattened (`Filters.0.Values.0=x`, all
strings) and are rebuilt into the nested shape a POST body has, converting to the declared types.

Like the real gateway, a POST body may carry integers and floats as numeric strings (Tencent's own
examples send `"Port": "80"`): they are converted to the declared type. Enumerations the real API
accepts in any case (CLB `Protocol`: `"tcp"`) are normalised to their canonical spelling.
"""

import json
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from sandbox.core.errors import ApiError

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"
Member = dict[str, Any]  # {"name", "type", "member", "required"}

# service -> member name -> canonical values: enumerations the real API matches case-insensitively.
CASE_INSENSITIVE: dict[str, dict[str, tuple[str, ...]]] = {
    "clb": {"Protocol": ("TCP", "UDP", "HTTP", "HTTPS", "TCP_SSL", "QUIC", "TCP_QUIC")},
}


@cache
def load(service: str, version: str) -> dict[str, Any]:
    path = SPEC_DIR / f"{service}-{version}.json"
    return json.loads(path.read_text()) if path.exists() else {"actions": {}, "objects": {}}


def input_members(service: str, version: str, action: str) -> list[Member] | None:
    spec = load(service, version)
    declared = spec["actions"].get(action)
    return None if declared is None else spec["objects"][declared["input"]]


def validate(service: str, version: str, action: str, params: Any) -> dict[str, Any]:
    """Check a POST body against the action's input; return it (types already JSON-native)."""
    members = input_members(service, version, action)
    if members is None:
        return params
    if not isinstance(params, dict):
        raise ApiError("InvalidParameter", "The request body must be a JSON object.")
    spec = load(service, version)
    return _check_object(params, members, spec["objects"], prefix="", enums=CASE_INSENSITIVE.get(service, {}))


def from_query(service: str, version: str, action: str, query: str) -> dict[str, Any]:
    """Rebuild a GET request's flattened parameters into nested, typed values, then validate."""
    tree: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ("Action", "Version", "Region", "Timestamp", "Nonce", "SecretId", "Signature", "Language"):
            continue
        node: Any = tree
        parts = key.split(".")
        for part, following in zip(parts, [*parts[1:], None], strict=True):
            slot: Any = int(part) if part.isdigit() else part
            if following is None:
                _put(node, slot, value)
            else:
                if _get(node, slot) is None:
                    _put(node, slot, [] if following.isdigit() else {})
                node = _get(node, slot)
    members = input_members(service, version, action)
    if members is None:
        return _lists(tree)
    objects, enums = load(service, version)["objects"], CASE_INSENSITIVE.get(service, {})
    return _check_object(_lists(tree), members, objects, prefix="", coerce=True, enums=enums)


def _get(node: Any, slot: Any) -> Any:
    if isinstance(node, dict):
        return node.get(slot)
    return node[slot] if isinstance(slot, int) and slot < len(node) else None


def _put(node: Any, slot: Any, value: Any) -> None:
    if isinstance(node, dict):
        node[str(slot)] = value
    elif isinstance(slot, int):
        node.extend([None] * (slot + 1 - len(node)))
        node[slot] = value
    else:
        raise ApiError("InvalidParameter", f"The parameter `{slot}` cannot follow a list index.")


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lists(v) for v in value if v is not None]
    return value


_PRIMITIVES = {"string", "int", "bool", "float", "binary"}


Enums = dict[str, tuple[str, ...]]


def _check_object(
    params: dict[str, Any],
    members: list[Member],
    objects: dict[str, list[Member]],
    prefix: str,
    coerce: bool = False,
    enums: Enums | None = None,
) -> dict[str, Any]:
    declared = {m["name"]: m for m in members}
    for name in params:
        if name not in declared:
            raise ApiError("UnknownParameter", f"The parameter `{prefix}{name}` is not recognized.")
    for m in members:
        if m.get("required") and m["name"] not in params:
            raise ApiError("MissingParameter", f"The request is missing a required parameter `{prefix}{m['name']}`.")
    enums = enums or {}
    checked = {}
    for name, value in params.items():
        checked[name] = _check_value(value, declared[name], objects, f"{prefix}{name}", coerce, enums)
        if name in enums:
            checked[name] = _canonical(checked[name], enums[name])
    return checked


def _canonical(value: Any, allowed: tuple[str, ...]) -> Any:
    """`tcp` -> `TCP` for an enumeration the real API matches case-insensitively (others are left as sent)."""
    if isinstance(value, list):
        return [_canonical(v, allowed) for v in value]
    if isinstance(value, str):
        return next((a for a in allowed if a.lower() == value.lower()), value)
    return value


def _check_value(
    value: Any, member: Member, objects: dict[str, list[Member]], path: str, coerce: bool, enums: Enums
) -> Any:
    kind, element = member["type"], member.get("member", "string")
    if kind == "list":
        if not isinstance(value, list):
            raise _wrong_type(path, "list")
        item = {"type": "object", "member": element} if element in objects else {"type": _kind(element)}
        return [_check_value(v, item, objects, f"{path}.{i}", coerce, enums) for i, v in enumerate(value)]
    if kind == "object":
        if not isinstance(value, dict):
            raise _wrong_type(path, "object")
        return _check_object(value, objects.get(element, []), objects, f"{path}.", coerce, enums)
    return _check_primitive(value, kind, path, coerce)


def _kind(element: str) -> str:
    if element in ("int64", "uint64", "int", "integer"):
        return "int"
    if element in ("bool", "float"):
        return element
    return "string"


def _check_primitive(value: Any, kind: str, path: str, coerce: bool) -> Any:
    if isinstance(value, str) and kind in ("int", "float") and not coerce:
        return _numeric(value, kind, path)  # a POST body's `"Port": "80"`, as the real gateway accepts
    if coerce and isinstance(value, str):
        try:
            if kind == "int":
                return int(value)
            if kind == "float":
                return float(value)
            if kind == "bool":
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return value.lower() == "true"
        except ValueError:
            raise _wrong_type(path, kind) from None
        return value
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }.get(kind, isinstance(value, str))
    if not ok:
        raise _wrong_type(path, kind)
    return value


def _numeric(value: str, kind: str, path: str) -> int | float:
    text = value.strip()
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        raise _wrong_type(path, kind) from None


def _wrong_type(path: str, kind: str) -> ApiError:
    return ApiError("InvalidParameter", f"The value type of parameter `{path}` is not valid: expected {kind}.")
