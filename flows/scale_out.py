"""The guide's cluster expansion ("集群版架构扩容"), tier by tier, as Prefect flows.

Each tier flow reads like the guide: preflight, image, launch, load balancer, listener, security groups,
bind, verify, (session tier) repoint the business servers and verify again, report. Around it,
`tier_run` holds the tier's lock and undoes everything the run changed if anything fails.
`dry_run` stops after preflight and records the plan.

The order is the guide's, the waits overlap where nothing depends on them: a tier's CLB and listener need only the
VPC, so they are made while the image bakes and the servers boot (`servers_from_image.submit`); and
`scale-out-cluster` runs the business tier beside the session tier, its new servers repointed to the session VIP
(like the old one) before they are bound and serve.
"""

from __future__ import annotations

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE

from flows.declaration import declared
from flows.parameters import BusinessTierParameters, ClusterParameters, SessionTierParameters, TierParameters
from flows.scale_out_steps import balance, launch, verify
from flows.scale_out_steps.preflight import (
    PreflightFailed,
    TierPlan,
    placement_mismatches,
    preflight_tier,
    select_servers,
)
from flows.scale_out_steps.repoint import repoint_business_servers
from flows.shared import handoff
from flows.shared.tier_run import TierOutcome, TierRun, settle_all, this_flow_run_id, tier_run
from tasks.business_server import plan_config_change
from tasks.clb import Listener, LoadBalancer
from tasks.cvm import Image, Server
from tasks.health import auth_url
from tasks.models import Change, HostKeyPolicy, RuntimeProfile, SshSettings

SESSION_STEPS = 12
BUSINESS_STEPS = 12


def built_beside_balancer(
    run: TierRun[TierParameters], plan: TierPlan, clb_type: str, port: int, health_path: str
) -> tuple[Image, list[Server], LoadBalancer, Listener]:
    """Steps 1 and 2 (the image, the servers from it) as a branch of the run while step 3's CLB and its listener are
    made: they need only the VPC. Nothing is undone while the image or the servers are still being made."""
    building = launch.servers_from_image.submit(run, plan)
    try:
        balancer = balance.load_balancer(run, plan, clb_type)
        listener = balance.tcp_listener(run, balancer, port, health_path)
    finally:
        settle_all([building])
    image, new = building.result()
    return image, new, balancer, listener


@flow(
    name="scale-out-session-tier", description="会话管理服务器扩容: the session (auth) servers behind an internal CLB"
)
def scale_out_session_tier(params: SessionTierParameters) -> TierOutcome:
    params = declared(params)
    profile, port = params.runtime_profile(), params.backend_port()
    with tier_run("scale-out-session-tier", "session", params, SESSION_STEPS, undo_by_marks=True) as run:
        with run.step("preflight: placement, state, quota, image name, the business servers' sdk.config over SSH"):
            plan = preflight_tier(params, "session", "INTERNAL", launch.image_name(run), run.tags)
            business, planned = preflight_business_servers(run, plan, profile)
        if params.dry_run:
            run.record.changes += planned
            return run.finish(planned_outcome(run, plan, "INTERNAL", port, business))
        # 1. 制作会话管理服务器镜像  2. 基于镜像创建会话管理服务器, while 3. 创建内网负载均衡 and its TCP listener
        image, new, balancer, listener = built_beside_balancer(run, plan, "INTERNAL", port, params.health.auth_path)
        # 3. the VIP let in, old and new servers bound and healthy
        servers, skipped = balance.bindable([*running(plan.members), *new])
        balance.admit_vip(run, balancer, servers, port)
        bound = balance.bind(run, balancer, listener, servers, port)
        balance.wait_targets_healthy(run, balancer, listener, bound, port)
        url = auth_url(balancer.vip or "", params.load_balancer.listener_port, params.health.auth_path)
        verify.session_service_through_vip(run, url)
        handoff.publish(run.key, url)  # scale-out-cluster: the business tier beside this one may use the VIP now
        # 4. 修改业务服务器配置: each business server reaches the VIP itself, then is repointed and restarted
        verify.servers_reach(run, business, profile, url)
        repoint_business_servers(run, business, profile, url)
        return run.finish(outcome(run, plan, image, new, balancer, listener.listener_id, bound, skipped))


@flow(name="scale-out-business-tier", description="业务服务器扩容: the business servers behind a public CLB")
def scale_out_business_tier(params: BusinessTierParameters) -> TierOutcome:
    params = declared(params)
    profile, port = params.runtime_profile(), params.backend_port()
    with tier_run("scale-out-business-tier", "business", params, BUSINESS_STEPS, undo_by_marks=True) as run:
        with run.step("preflight: placement, state, quota, image name"):
            plan = preflight_tier(params, "business", "OPEN", launch.image_name(run), run.tags)
        if params.dry_run:
            return run.finish(planned_outcome(run, plan, "OPEN", port, []))
        # 1. 制作业务服务器镜像  2. 基于镜像创建业务服务器, while 3. 配置外网负载均衡 and its TCP listener
        image, new, balancer, listener = built_beside_balancer(run, plan, "OPEN", port, params.health.up_path)
        verify.business_apps(run, new, profile, "the new business servers' app answers (the image starts it at boot)")
        # Beside the session tier (scale-out-cluster), the image may predate its VIP: the new servers are repointed
        # to it before they serve. Alone, the image already carries the session tier's authServerUrl.
        if (session := handoff.partner(run.key)) is not None:
            url = session.wait(session_tier_seconds(params))
            repoint_business_servers(run, new, profile, url)
        # 3. the VIP let in, old and new servers bound and healthy
        servers, skipped = balance.bindable([*running(plan.members), *new])
        balance.admit_vip(run, balancer, servers, port)
        bound = balance.bind(run, balancer, listener, servers, port)
        balance.wait_targets_healthy(run, balancer, listener, bound, port)
        verify.business_app_through_vip(run, balancer.vip or "")
        return run.finish(outcome(run, plan, image, new, balancer, listener.listener_id, bound, skipped))


@flow(name="scale-out-cluster", description="集群版架构扩容: both tiers at once, the business servers on the new VIP")
def scale_out_cluster(params: ClusterParameters) -> list[TierOutcome]:
    """The business tier beside the session tier: its image, CLB and servers need nothing of the session tier; its
    new servers wait for the session VIP and are repointed to it before they are bound and serve traffic (when the
    run can SSH into the servers it launches: `reaches_new_servers`; else the session tier first, as the guide).

    Both tiers run under one run key (this flow run's id by default): `cleanup-run` with it finds all.
    A failed business tier is undone; the session tier, verified before, stays. A failed session tier fails the
    business tier too (it waits for the VIP), which is undone.
    """
    params = declared(params)
    key = params.run_key or this_flow_run_id()
    shared = {"run_key": key}
    session = params.session.model_copy(update={**shared, "dry_run": params.dry_run or params.session.dry_run})
    business = params.business.model_copy(update={**shared, "dry_run": params.dry_run or params.business.dry_run})
    # In sequence when a tier only plans (a planned session tier gives no VIP to wait for) or the run cannot SSH
    # into the business servers it launches: the business server is imaged once it holds the new URL.
    if session.dry_run or business.dry_run or not reaches_new_servers(business.ssh):
        return [scale_out_session_tier(session), scale_out_business_tier(business)]
    with handoff.session_url(key) as session_url:
        business_run = business_tier_beside.submit(business)
        try:
            session_outcome = scale_out_session_tier(session)
        except BaseException as error:
            session_url.fail(error)  # the business tier stops waiting, and undoes its changes
            raise
        finally:
            settle_all([business_run])
    return [session_outcome, business_run.result()]


@task(name="business-tier-beside-the-session-tier", cache_policy=NO_CACHE)
def business_tier_beside(params: BusinessTierParameters) -> TierOutcome:
    return scale_out_business_tier(params)


def reaches_new_servers(ssh: SshSettings) -> bool:
    """Can the run SSH into the business servers it launches, to repoint them? Not with `strict` host keys: a server
    launched from an image has a host key of its own, in no known_hosts line the operator could have given. Then the
    business tier runs after the session tier, imaging the business server once it holds the new authServerUrl."""
    return ssh.host_key_policy != HostKeyPolicy.strict


def session_tier_seconds(params: TierParameters) -> float:
    """How long the business tier waits for the session tier's VIP: as long as the session tier may take to get it."""
    t = params.timeouts
    return t.image + t.launch + 2 * t.clb + 2 * t.health


def running(servers: list[Server]) -> list[Server]:
    return [s for s in servers if s.state == "RUNNING"]


def preflight_business_servers(
    run: TierRun[SessionTierParameters], plan: TierPlan, profile: RuntimeProfile
) -> tuple[list[Server], list[Change]]:
    """Every business server: found, RUNNING, placed like the session server, sdk.config readable over SSH."""
    params = run.params
    problems: list[str] = []
    business = running(select_servers(params.region, params.business_servers))
    if not business:
        problems.append(
            f"no RUNNING business server matches {params.business_servers.describe()}: nothing would use the new VIP"
        )
    for server in business:
        problems += placement_mismatches(plan.source, server, "business server")
    if problems:
        raise PreflightFailed(problems)
    vip_url = auth_url("VIP", params.load_balancer.listener_port, params.health.auth_path)
    futures = plan_config_change.map(business, unmapped(params.ssh), unmapped(profile), unmapped(vip_url))
    settle_all(futures)
    planned: list[Change] = []
    for server, future in zip(business, futures, strict=True):
        try:
            planned.append(future.result())
        except Exception as error:
            problems.append(f"business server {server.instance_id} ({server.private_ip}): {error}")
    if problems:
        raise PreflightFailed(problems)
    return business, planned


def planned_outcome(
    run: TierRun[SessionTierParameters | BusinessTierParameters],
    plan: TierPlan,
    clb_type: str,
    port: int,
    business: list[Server],
) -> TierOutcome:
    """The dry run's account of what the run would do, step by step."""
    source, lb, options, params = plan.source, plan.load_balancer, run.params.load_balancer, run.params
    kind = "internal" if clb_type == "INTERNAL" else "public"
    groups = ", ".join(sorted(set(source.security_group_ids)))
    run.record.plan += [
        f"image {run.tier} server {source.instance_id} ({source.private_ip}) as {launch.image_name(run)!r}",
        f"launch {params.count} x {plan.instance_type} in {source.zone} (project {source.project_id}, VPC "
        f"{source.vpc_id}, subnet {source.subnet_id}, security groups {groups})",
        f"use {kind} CLB {lb.load_balancer_id} (VIP {lb.vip})"
        if lb
        else f"create {kind} CLB {options.name or f'tcscale-{run.tier}'} in {source.vpc_id}",
        f"TCP listener {options.listener_port} -> backend port {port}",
        f"admit the VIP on TCP {port} in {groups}",
        f"bind {', '.join(s.instance_id for s in running(plan.members))} and the {params.count} new servers",
    ]
    if business:
        run.record.plan.append(
            f"rewrite authServerUrl on {len(business)} business server(s) (canary {business[0].instance_id} first) "
            f"once each reaches the VIP itself, restart with {params.runtime} and prove it"
        )
    return TierOutcome(tier=run.tier, run_key=run.key, dry_run=True, plan=run.record.plan, changes=run.record.changes)


def outcome(
    run: TierRun[TierParameters],
    plan: TierPlan,
    image: Image,
    new: list[Server],
    balancer: LoadBalancer,
    listener_id: str,
    bound: list[str],
    skipped: dict[str, str],
) -> TierOutcome:
    """What a tier's run made, for the caller; also the servers table of the report."""
    run.record.servers = [
        {
            "instance_id": s.instance_id,
            "role": "new" if s in new else "existing",
            "imaged": s.instance_id == plan.source.instance_id,
            "tier": run.tier,
            "private_ip": s.private_ip,
            "zone": s.zone,
            "bound_to_clb": s.instance_id in bound,
            "not_bound_because": skipped.get(s.instance_id, ""),
        }
        for s in [*running(plan.members), *new]
    ]
    return TierOutcome(
        tier=run.tier,
        run_key=run.key,
        dry_run=False,
        image_id=image.image_id,
        new_instance_ids=[s.instance_id for s in new],
        load_balancer_id=balancer.load_balancer_id,
        vip=balancer.vip,
        listener_id=listener_id,
        bound=bound,
        changes=run.record.changes,
    )
