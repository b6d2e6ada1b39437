"""Checks every VPC action shares: names, resource ids, CIDR blocks (with this API's error codes)."""

import ipaddress

from sandbox.core.errors import ApiError


def check_name(parameter: str, name: str) -> None:
    if not name.strip():
        raise ApiError("InvalidParameterValue.Empty", f"`{parameter}` must not be empty.")
    if len(name) > 60:
        raise ApiError("InvalidParameterValue.TooLong", f"`{parameter}` is longer than 60 characters.")


def check_id(parameter: str, value: str, prefix: str, code: str = "InvalidParameterValue.Malformed") -> None:
    body = value.removeprefix(f"{prefix}-")
    if body == value or len(body) != 8 or not body.isalnum():
        raise ApiError(code, f"The {parameter} `{value}` is malformed: expected {prefix}-xxxxxxxx.")


def parse_network(parameter: str, text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError:
        raise ApiError(
            "InvalidParameterValue.Malformed", f"The {parameter} `{text}` is not a CIDR block like 127.30.0.0/16."
        ) from None
