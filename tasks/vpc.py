"""Security groups: let a load balancer's VIP through to its backends (the guide's warning), and take it back."""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.cloud import call_json, clients_for, retrying


class IngressRule(BaseModel):
    security_group_id: str
    cidr_block: str
    port: str
    protocol: str = "TCP"
    description: str = ""

    def api(self) -> dict[str, Any]:
        return {
            "Protocol": self.protocol,
            "Port": self.port,
            "CidrBlock": self.cidr_block,
            "Action": "ACCEPT",
            "PolicyDescription": self.description,
        }

    def same_as(self, policy: dict[str, Any]) -> bool:
        return (
            policy.get("CidrBlock") == self.cidr_block
            and str(policy.get("Port")).upper() == self.port.upper()
            and str(policy.get("Protocol")).upper() == self.protocol
            and policy.get("Action") == "ACCEPT"
        )


def ingress_policies(region: str, security_group_id: str) -> list[dict[str, Any]]:
    answer = call_json(clients_for(region).vpc, "DescribeSecurityGroupPolicies", {"SecurityGroupId": security_group_id})
    return answer["SecurityGroupPolicySet"].get("Ingress") or []


def has_rule(region: str, rule: IngressRule) -> bool:
    return existing_description(region, rule) is not None


def existing_description(region: str, rule: IngressRule) -> str | None:
    """The description of the group's rule that does what `rule` does (None: there is none)."""
    for policy in ingress_policies(region, rule.security_group_id):
        if rule.same_as(policy):
            return policy.get("PolicyDescription") or ""
    return None


def marked_by(description: str, run_key: str) -> bool:
    marker = _MARKER.match(description)
    return bool(marker and marker.group(1) == run_key)


@task(name="admit-ingress", cache_policy=NO_CACHE)
@retrying()
def admit(region: str, rule: IngressRule) -> bool:
    """Add the ACCEPT rule unless an identical one exists; True when this call added it."""
    if has_rule(region, rule):
        return False
    call_json(
        clients_for(region).vpc,
        "CreateSecurityGroupPolicies",
        {"SecurityGroupId": rule.security_group_id, "SecurityGroupPolicySet": {"Ingress": [rule.api()]}},
    )
    return True


@task(name="revoke-ingress", cache_policy=NO_CACHE)
@retrying()
def revoke(region: str, rule: IngressRule) -> bool:
    """Remove exactly this rule (by its identity, not by index: indexes shift); True when it was there."""
    if not has_rule(region, rule):
        return False
    call_json(
        clients_for(region).vpc,
        "DeleteSecurityGroupPolicies",
        {"SecurityGroupId": rule.security_group_id, "SecurityGroupPolicySet": {"Ingress": [rule.api()]}},
    )
    return True


def security_group_ids(region: str) -> list[str]:
    vpc_client, ids, offset = clients_for(region).vpc, [], 0
    while True:
        answer = call_json(vpc_client, "DescribeSecurityGroups", {"Offset": str(offset), "Limit": "100"})
        ids += [g["SecurityGroupId"] for g in answer["SecurityGroupSet"]]
        offset += len(answer["SecurityGroupSet"])
        if not answer["SecurityGroupSet"] or offset >= answer["TotalCount"]:
            return ids


def run_marker(run_key: str, what: str) -> str:
    """The description a run gives the rules it adds: `tcscale:<run key> <what>` (rules have no tags)."""
    return f"tcscale:{run_key} {what}"


_MARKER = re.compile(r"^tcscale:([a-z0-9-]+)(?:\s|$)")


def rules_of_run(region: str, run_key: str) -> list[IngressRule]:
    """Every ingress ACCEPT rule a run added, by the exact run key in its description (`abc` never finds `abc-2`)."""
    found = []
    for group in security_group_ids(region):
        for policy in ingress_policies(region, group):
            description = policy.get("PolicyDescription") or ""
            if marked_by(description, run_key):
                found.append(
                    IngressRule(
                        security_group_id=group,
                        cidr_block=policy.get("CidrBlock") or "",
                        port=str(policy.get("Port")),
                        protocol=str(policy.get("Protocol")).upper(),
                        description=description,
                    )
                )
    return found
