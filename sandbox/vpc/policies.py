"""Security-group rules as the API states them: parsing, validation, identity, and packet matching.

Pure functions over `SecurityGroupPolicy` (no state): the backend applies them to groups, the data
plane reaches them through `VpcBackend.admits`.
"""

import ipaddress
from typing import Any

from pydantic import BaseModel

from sandbox.core.errors import ApiError

PROTOCOLS = ("TCP", "UDP", "ICMP", "ICMPV6", "GRE", "ALL")
ACTIONS = ("ACCEPT", "DROP")
SOURCES = ("CidrBlock", "Ipv6CidrBlock", "SecurityGroupId", "AddressTemplate")


class SecurityGroupPolicy(BaseModel):
    """One rule, shaped like the API's SecurityGroupPolicy (one direction)."""

    protocol: str = "ALL"  # TCP, UDP, ICMP, ICMPV6, GRE, ALL
    port: str = "ALL"  # "80", "8000-8010", "22,80", "ALL"
    cidr_block: str | None = None
    ipv6_cidr_block: str | None = None
    security_group_id: str | None = None  # source group (mutually exclusive with the CIDRs)
    action: str = "ACCEPT"  # ACCEPT / DROP
    description: str = ""
    modify_time: str = ""

    def source(self) -> str:
        return self.cidr_block or self.ipv6_cidr_block or self.security_group_id or ""

    def identity(self) -> tuple[str, ...]:
        """What makes two rules the same rule (the description does not)."""
        return (
            self.protocol,
            self.port,
            self.cidr_block or "",
            self.ipv6_cidr_block or "",
            self.security_group_id or "",
            self.action,
        )


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == {}


def parse_policy(raw: dict[str, Any], modify_time: str) -> SecurityGroupPolicy:
    """A request's SecurityGroupPolicy → a stored rule, refusing what the real API refuses."""
    for unsupported in ("AddressTemplate", "ServiceTemplate"):
        if not _blank(raw.get(unsupported)):
            present = [s for s in SOURCES if not _blank(raw.get(s))]
            if unsupported == "AddressTemplate" and len(present) > 1:
                raise coexist(present)
            raise ApiError(
                "UnsupportedOperation",
                f"`{unsupported}` (parameter templates) is not supported by the sandbox: "
                "give the rule a CidrBlock or a SecurityGroupId, and a Protocol and Port.",
            )
    sources = [s for s in SOURCES if not _blank(raw.get(s))]
    if len(sources) > 1:
        raise coexist(sources)
    if not sources:
        raise ApiError(
            "MissingParameter", "A security group policy needs one of CidrBlock, Ipv6CidrBlock or SecurityGroupId."
        )
    protocol = str(raw.get("Protocol") or "").upper()
    if not protocol:
        raise ApiError("MissingParameter", "A security group policy needs a `Protocol` (TCP, UDP, ICMP, ALL...).")
    if protocol not in PROTOCOLS:
        raise ApiError(
            "InvalidParameterValue", f"The protocol `{raw['Protocol']}` is not one of {', '.join(PROTOCOLS)}."
        )
    port = parse_port(raw.get("Port"), protocol)
    action = str(raw.get("Action") or "").upper()
    if not action:
        raise ApiError("MissingParameter", "A security group policy needs an `Action` (ACCEPT or DROP).")
    if action not in ACTIONS:
        raise ApiError("InvalidParameterValue", f"The action `{raw['Action']}` must be ACCEPT or DROP.")
    cidr = raw.get("CidrBlock") or None
    if cidr is not None:
        cidr = normalize_cidr(cidr)
    ipv6 = raw.get("Ipv6CidrBlock") or None
    if ipv6 is not None:
        if protocol == "ICMP":
            raise ApiError(
                "InvalidParameter.Coexist", "Ipv6CidrBlock and protocol ICMP exclude each other: use ICMPV6."
            )
        try:
            ipaddress.IPv6Network(ipv6, strict=False)
        except ValueError:
            raise ApiError("InvalidParameterValue.Malformed", f"`{ipv6}` is not an IPv6 CIDR block.") from None
    description = str(raw.get("PolicyDescription") or "")
    if len(description) > 100:
        raise ApiError("InvalidParameterValue.TooLong", "PolicyDescription is longer than 100 characters.")
    return SecurityGroupPolicy(
        protocol=protocol,
        port=port,
        cidr_block=cidr,
        ipv6_cidr_block=ipv6,
        security_group_id=raw.get("SecurityGroupId") or None,
        action=action,
        description=description,
        modify_time=modify_time,
    )


def coexist(fields: list[str]) -> ApiError:
    return ApiError("InvalidParameter.Coexist", f"The parameters {' and '.join(fields)} exclude each other.")


def parse_port(value: Any, protocol: str) -> str:
    """`80`, `8000-8010`, `22,80,443` or `ALL`; a port only goes with TCP or UDP."""
    text = "" if value is None else str(value).strip()
    if text == "" or text.upper() == "ALL":
        return "ALL"
    if protocol not in ("TCP", "UDP"):
        raise ApiError(
            "InvalidParameter.Coexist", f"A Port is accepted only with protocol TCP or UDP, not with {protocol}."
        )
    for part in text.split(","):
        bounds = part.strip().split("-")
        if len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
            raise ApiError(
                "InvalidParameterValue.Malformed", f"The port `{text}` is malformed: use 80, 8000-8010 or 22,80."
            )
        numbers = [int(b) for b in bounds]
        if not all(1 <= n <= 65535 for n in numbers) or numbers[0] > numbers[-1]:
            raise ApiError("InvalidParameterValue.Range", f"The port `{text}` is outside 1-65535 or an empty range.")
    return ",".join(p.strip() for p in text.split(","))


def normalize_cidr(text: str) -> str:
    try:
        network = ipaddress.IPv4Network(text.strip(), strict=False)
    except ValueError:
        raise ApiError("InvalidParameterValue.Malformed", f"`{text}` is not an IPv4 address or CIDR block.") from None
    # The API maps every 0.0.0.0/n to 0.0.0.0/0; other blocks are kept as written.
    return "0.0.0.0/0" if network.network_address == ipaddress.IPv4Address(0) else text.strip()


def port_matches(rule_port: str, port: int) -> bool:
    if rule_port == "ALL":
        return True
    for part in rule_port.split(","):
        low, _, high = part.partition("-")
        if int(low) <= port <= int(high or low):
            return True
    return False


def protocol_matches(rule_protocol: str, protocol: str) -> bool:
    return rule_protocol == "ALL" or rule_protocol == protocol.upper()


def cidr_matches(cidr: str, source: ipaddress.IPv4Address) -> bool:
    return source in ipaddress.IPv4Network(cidr, strict=False)
