"""`status`: the live topology of both tiers, read from the cloud with the product's own tasks functions
(servers by tag tcscale:tier, the CLBs serving them with target health, the scaling groups), and the last runs.

Also the region a tier lives in (the cluster declaration's, else the settings' default) and the tier's current
desired capacity, which decides whether a `set` is dangerous.
"""

from __future__ import annotations

from typing import Any

from chatops.commands import TIERS
from flows.autoscaling_steps.plan import group_name
from tasks import autoscaling as asg
from tasks import clb, cvm


def declaration() -> Any | None:
    """The cluster declaration (engineer A's flows/declaration.py), or None if there is none."""
    try:
        from flows.declaration import load_declaration  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return load_declaration()
    except Exception:  # a broken declaration is the flows' to report; status falls back to the default region
        return None


def tier_region(tier: str, default: str, declared: Any | None = None) -> str:
    declared = declared if declared is not None else declaration()
    found = getattr(getattr(declared, tier, None), "region", None)
    return found if isinstance(found, str) and found else default


def current_desired(tier: str, default_region: str) -> int | None:
    """The tier's scaling group's desired capacity now, or None (no group, no cloud access)."""
    try:
        group = asg.find_group(tier_region(tier, default_region), group_name(tier))
    except Exception:
        return None
    return None if group is None else group.desired


def tier_lines(tier: str, region: str) -> list[str]:
    lines = [f"{tier} tier ({region}):"]
    servers = cvm.describe_servers(region, filters=cvm.tag_filters({cvm.TIER_TAG: tier}))
    ips = {s.private_ip: s for s in servers if s.private_ip}
    lines.append(f"  servers ({len(servers)}): " + (", ".join(
        f"{s.instance_id} {s.private_ip} {s.state}" for s in servers) or "none"))  # fmt: skip
    balancers = []
    if ips:
        for kind in ("INTERNAL", "OPEN"):
            balancers += clb.load_balancers_serving(region, list(ips), kind)
    for balancer in balancers:
        health = clb.target_health_of(region, balancer.load_balancer_id)
        targets = ", ".join(f"{i} {'healthy' if ok else 'UNHEALTHY'}" for i, ok in sorted(health.items())) or "none"
        lines.append(f"  CLB {balancer.load_balancer_id} {balancer.type} {balancer.vip or '-'}: targets {targets}")
    if not balancers:
        lines.append("  CLB: none serves these servers")
    group = asg.find_group(region, group_name(tier))
    if group is None:
        lines.append(f"  scaling group {group_name(tier)}: none")
    else:
        members = asg.members(region, group.group_id)
        lines.append(
            f"  scaling group {group.group_id} ({group.name}): desired {group.desired} in [{group.min_size}, "
            f"{group.max_size}], {len(members)} member(s)" + (", an activity is running" if group.in_activity else "")
        )
    return lines


def topology(default_region: str) -> list[str]:
    """Both tiers, one block each; a tier the cloud cannot be read for says why (never a credential)."""
    declared = declaration()
    lines: list[str] = []
    for tier in TIERS:
        region = tier_region(tier, default_region, declared)
        try:
            lines += tier_lines(tier, region)
        except Exception as error:
            lines.append(f"{tier} tier ({region}): cannot read the cloud: {type(error).__name__}: "
                         f"{getattr(error, 'message', '')}"[:300])  # fmt: skip
    return lines
