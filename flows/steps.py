"""The steps both tiers share, in the guide's words: image the server, launch from the image, balance them.

Each function runs inside the calling flow (they are not flows themselves) and records what it did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.concurrency.sync import concurrency
from prefect.context import get_run_context
from pydantic import BaseModel, Field

from flows.parameters import TierParameters
from flows.preflight import TierPlan
from flows.records import RunRecord
from tasks import clb, cvm, vpc
from tasks.health import Probe, wait_until_ok

LOCK_WAIT_SECONDS = 10.0


class TierBusy(Exception):
    pass


class Launched(BaseModel):
    image: cvm.Image
    servers: list[cvm.Server]


class Balanced(BaseModel):
    load_balancer: clb.LoadBalancer
    listener: clb.Listener
    bound: list[str] = Field(description="servers bound to the listener (old and new)")
    skipped: dict[str, str] = Field(default_factory=dict, description="servers not bound, and why")


def run_key(params: TierParameters) -> str:
    if params.run_key:
        return params.run_key
    return str(get_run_context().flow_run.id)  # type: ignore[union-attr]


def ownership_tags(key: str, tier: str) -> dict[str, str]:
    """Every resource a run makes carries these: `cleanup-run` and re-runs find them by tag."""
    return {"tcscale:run": key, "tcscale:tier": tier}


def image_name(params: TierParameters, tier: str, key: str) -> str:
    return params.image.name or f"tcscale-{tier}-{key[:8]}"


def client_token(key: str, tier: str, what: str) -> str:
    return f"tcscale-{key}-{tier}-{what}"[:64]


@contextlib.contextmanager
def tier_lock(tier: str) -> Iterator[None]:
    """One scale operation per tier at a time, across every process that shares the Prefect server."""
    from prefect.client.orchestration import get_client

    name = f"tcscale-scale-{tier}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    try:
        with concurrency(name, occupy=1, timeout_seconds=LOCK_WAIT_SECONDS, strict=True):
            yield
    except TimeoutError:
        raise TierBusy(
            f"another scale operation on the {tier} tier is running (concurrency limit {name!r} is taken): "
            "wait for it to finish, or cancel it in the Prefect UI"
        ) from None


def launch_from_image(record: RunRecord, plan: TierPlan, params: TierParameters, tags: dict[str, str]) -> Launched:
    """Guide steps 1 and 2: make an image of the server, then create servers from the image."""
    source, key, tier = plan.source, record.run_key, record.tier
    name = image_name(params, tier, key)
    with record.step(f"image {source.instance_id} as {name!r}"):
        image = cvm.create_image(source, name, tags, params.image.reuse)
        record.add("image", image.image_id, created=not image.reused, detail=name)
        image = cvm.wait_image_normal(source.region, image, params.timeouts.image, params.timeouts.poll)
    with record.step(f"launch {params.count} x {plan.instance_type} from {image.image_id}"):
        ids = cvm.run_servers(
            source,
            image.image_id,
            params.count,
            plan.instance_type,
            f"tcscale-{tier}-{key[:8]}",
            tags,
            client_token(key, tier, "servers"),
        )
        for instance_id in ids:
            record.add("instance", instance_id, created=True, detail=f"{tier} server from {image.image_id}")
        servers = cvm.wait_servers_running(source.region, ids, params.timeouts.launch, params.timeouts.poll)
    return Launched(image=image, servers=servers)


class NothingToBind(Exception):
    pass


def bindable(servers: list[cvm.Server]) -> tuple[list[cvm.Server], dict[str, str]]:
    """As the console does (the guide): only servers not isolated, not expired, with bandwidth > 0."""
    ok, skipped = [], {}
    for server in servers:
        reason = server.unbindable_reason()
        if reason:
            skipped[server.instance_id] = reason
        else:
            ok.append(server)
    if not ok:
        listed = "; ".join(f"{i}: {why}" for i, why in skipped.items())
        raise NothingToBind(f"no server can be bound to the load balancer ({listed})")
    return ok, skipped


def put_behind_load_balancer(
    record: RunRecord,
    plan: TierPlan,
    params: TierParameters,
    servers: list[cvm.Server],
    clb_type: str,
    tags: dict[str, str],
) -> Balanced:
    """Guide step 3: a CLB (created or given), its TCP listener, the VIP let through, the servers bound."""
    source, options, timeouts = plan.source, params.load_balancer, params.timeouts
    key, tier = record.run_key, record.tier
    with record.step(f"{'use' if plan.load_balancer else 'create'} the {clb_type} load balancer"):
        if plan.load_balancer is not None:
            balancer = plan.load_balancer
            record.add("clb", balancer.load_balancer_id, created=False, detail=f"VIP {balancer.vip}")
        else:
            balancer = clb.create_load_balancer(
                source.region,
                options.name or f"tcscale-{tier}",
                clb_type,  # type: ignore[arg-type]
                source.vpc_id,
                source.subnet_id,
                source.project_id,
                tags,
                client_token(key, tier, "clb"),
                timeouts.clb,
            )
            record.add("clb", balancer.load_balancer_id, created=True, detail=f"{clb_type}, VIP {balancer.vip}")
        listener = clb.ensure_tcp_listener(
            source.region,
            balancer.load_balancer_id,
            options.listener_port,
            f"tcscale-{tier}-{options.listener_port}",
            options.health_check,
            params.health.auth_health_path if tier == "session" else params.health.path,
            timeouts.clb,
        )
        record.add(
            "listener",
            f"{balancer.load_balancer_id}/{listener.listener_id}",
            created=listener.created,
            detail=f"TCP {options.listener_port} -> {options.backend_port}",
        )
    to_bind, skipped = bindable(servers)
    for instance_id, why in skipped.items():
        record.plan.append(f"not bound: {instance_id}, because {why}")
    # The VIP is let in before the servers are bound: the CLB's first health checks then pass at once
    # instead of failing and needing `healthy_threshold` good intervals.
    with record.step(f"let the VIP {balancer.vip} through the servers' security groups"):
        for group in sorted({g for s in to_bind for g in s.security_group_ids}):
            rule = vpc.IngressRule(
                security_group_id=group,
                cidr_block=f"{balancer.vip}/32",
                port=str(options.backend_port),
                description=f"tcscale:{key} CLB {balancer.load_balancer_id}",
            )
            added = vpc.admit(source.region, rule)
            record.add("security-group", group, created=added, detail=f"ingress TCP {rule.port} from {rule.cidr_block}")
    with record.step(f"bind {len(to_bind)} server(s) to {balancer.load_balancer_id}"):
        clb.register_targets(
            source.region,
            balancer.load_balancer_id,
            listener.listener_id,
            [s.instance_id for s in to_bind],
            options.backend_port,
            timeouts.clb,
        )
    with record.step("wait until every bound server is healthy behind the CLB"):
        clb.wait_targets_healthy(
            source.region,
            balancer.load_balancer_id,
            listener.listener_id,
            [s.instance_id for s in to_bind],
            timeouts.health,
            min(timeouts.poll, 1.0),
        )
    return Balanced(load_balancer=balancer, listener=listener, bound=[s.instance_id for s in to_bind], skipped=skipped)


def verify(record: RunRecord, probes: dict, what: str, timeout: float, poll: float) -> list[Probe]:
    """Probe until all are ok, recording the last result of each (failures included)."""
    results: dict[str, Probe] = {}
    try:
        wait_until_ok(probes, what, timeout, poll, results)
    finally:
        record.probes += list(results.values())
    return list(results.values())


def plan_tier(record: RunRecord, params: TierParameters, plan: TierPlan, clb_type: str) -> None:
    """The dry run's account of what `launch_from_image` and `put_behind_load_balancer` would do."""
    source, lb, options = plan.source, plan.load_balancer, params.load_balancer
    kind = "internal" if clb_type == "INTERNAL" else "public"
    groups = ", ".join(sorted(set(source.security_group_ids)))
    record.plan += [
        f"image {record.tier} server {source.instance_id} ({source.private_ip}) as "
        f"{image_name(params, record.tier, record.run_key)!r}",
        f"launch {params.count} x {plan.instance_type} in {source.zone} (project {source.project_id}, VPC "
        f"{source.vpc_id}, subnet {source.subnet_id}, security groups {groups})",
        f"use {kind} CLB {lb.load_balancer_id} (VIP {lb.vip})"
        if lb
        else f"create {kind} CLB {options.name or f'tcscale-{record.tier}'} in {source.vpc_id}",
        f"TCP listener {options.listener_port} -> backend port {options.backend_port}",
        f"admit the VIP on TCP {options.backend_port} in {groups}",
        f"bind {source.instance_id} and the {params.count} new servers",
    ]
