"""Security groups: let a load balancer's VIP through to its backends (the guide's warning), and take it back."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.cloud import call_json, clients_for, retrying
from tasks.transactions import recalled, remember


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
    return any(rule.same_as(p) for p in ingress_policies(region, rule.security_group_id))


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
    remember(region=region, rule=rule)
    return True


@admit.on_rollback
def _revoke_admitted(txn) -> None:  # type: ignore[no-untyped-def]
    region, rule = recalled(txn, "region", "rule")
    if rule is not None:
        revoke.fn(region, rule)


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


def rules_described(region: str, marker: str) -> list[IngressRule]:
    """Every ingress ACCEPT rule whose description contains `marker` (how a run marks the rules it adds)."""
    found = []
    for group in security_group_ids(region):
        for policy in ingress_policies(region, group):
            if marker in (policy.get("PolicyDescription") or ""):
                found.append(
                    IngressRule(
                        security_group_id=group,
                        cidr_block=policy.get("CidrBlock") or "",
                        port=str(policy.get("Port")),
                        protocol=str(policy.get("Protocol")).upper(),
                        description=policy.get("PolicyDescription") or "",
                    )
                )
    return found
