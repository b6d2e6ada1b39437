"""The guide's cluster expansion ("集群版架构扩容"), tier by tier, as Prefect flows.

Each flow: preflight (nothing changes if anything is wrong) -> the guide's steps inside one
Prefect transaction (a failure rolls back everything this run made, in reverse) -> verification
-> a report. `dry_run` stops after preflight and records the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, unmapped
from prefect.transactions import transaction
from pydantic import BaseModel, Field

from flows import steps
from flows.parameters import BusinessTierParameters, ClusterParameters, SessionTierParameters
from flows.preflight import PreflightFailed, TierPlan, placement_mismatches, preflight_tier, select_servers
from flows.records import RunRecord
from tasks.cvm import Server
from tasks.health import auth_url, probe_auth, probe_business
from tasks.models import Change
from tasks.repoint import plan_config_change, repoint


class TierOutcome(BaseModel):
    tier: str
    run_key: str
    dry_run: bool
    image_id: str | None = None
    new_instance_ids: list[str] = Field(default_factory=list)
    load_balancer_id: str | None = None
    vip: str | None = None
    listener_id: str | None = None
    bound: list[str] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)
    plan: list[str] = Field(default_factory=list)
    report: str = ""


SESSION_STEPS = 10  # preflight, image, launch, CLB, admit, bind, healthy, VIP, canary, the rest
BUSINESS_STEPS = 9  # preflight, image, launch, apps healthy, CLB, admit, bind, healthy, VIP


@flow(
    name="scale-out-session-tier", description="会话管理服务器扩容: the session (auth) servers behind an internal CLB"
)
def scale_out_session_tier(params: SessionTierParameters) -> TierOutcome:
    def prepare(key: str, tags: dict[str, str]) -> SessionPlan:
        plan = preflight_tier(params, "session", "INTERNAL", steps.image_name(params, "session", key), tags)
        business, planned = preflight_business_servers(params, plan)
        return SessionPlan(tier=plan, business=business, planned=planned)

    return _run_tier(
        "scale-out-session-tier",
        "session",
        params,
        SESSION_STEPS,
        "preflight: placement, state, quota, image name, business servers' sdk.config over SSH",
        prepare,
        _plan_session,
        _scale_out_session,
    )


class SessionPlan(BaseModel):
    tier: TierPlan
    business: list[Server]
    planned: list[Change]


def _run_tier(
    name: str,
    tier: str,
    params: SessionTierParameters | BusinessTierParameters,
    step_count: int,
    preflight_step: str,
    prepare: Callable[[str, dict[str, str]], Any],
    plan_only: Callable[[RunRecord, Any, Any], TierOutcome],
    scale_out: Callable[[RunRecord, Any, Any, dict[str, str]], TierOutcome],
) -> TierOutcome:
    """What every tier flow does: preflight; then the plan (dry run), or the steps in one transaction
    under the tier's lock; and, whatever happens, a report."""
    key = steps.run_key(params)
    record = RunRecord(name, tier, params.region, key, params.dry_run, step_count)
    tags = steps.ownership_tags(key, tier)
    outcome, result = "failed", None
    try:
        with record.step(preflight_step):
            prepared = prepare(key, tags)
        if params.dry_run:
            result, outcome = plan_only(record, params, prepared), "planned"
        else:
            with steps.tier_lock(tier), transaction():
                result = scale_out(record, params, prepared, tags)
            outcome = "succeeded"
        return result
    finally:
        report = record.publish(outcome)
        if result is not None:
            result.report = report


def preflight_business_servers(params: SessionTierParameters, plan: TierPlan) -> tuple[list[Server], list[Change]]:
    """Every business server: found, RUNNING, placed like the session server, sdk.config readable over SSH."""
    problems: list[str] = []
    business = select_servers(params.region, params.business_servers)
    running = [s for s in business if s.state == "RUNNING"]
    if not running:
        problems.append(
            f"no RUNNING business server matches {params.business_servers.describe()}: nothing would use the new VIP"
        )
    for server in running:
        problems += placement_mismatches(plan.source, server, "business server")
    if problems:
        raise PreflightFailed(problems)
    vip_url = auth_url("VIP", params.load_balancer.listener_port, params.health.auth_path)
    profile = params.runtime_profile()
    futures = plan_config_change.map(running, unmapped(params.ssh), unmapped(profile), unmapped(vip_url))
    planned: list[Change] = []
    for server, future in zip(running, futures, strict=True):
        try:
            planned.append(future.result())
        except Exception as error:
            problems.append(f"business server {server.instance_id} ({server.private_ip}): {error}")
    if problems:
        raise PreflightFailed(problems)
    return running, planned


def _plan_session(record: RunRecord, params: SessionTierParameters, prepared: SessionPlan) -> TierOutcome:
    business, planned = prepared.business, prepared.planned
    steps.plan_tier(record, params, prepared.tier, "INTERNAL")
    record.plan += [
        f"rewrite authServerUrl on {len(business)} business server(s) (canary {business[0].instance_id} first), "
        f"restart with {params.runtime}",
    ]
    record.changes += planned
    return TierOutcome(tier="session", run_key=record.run_key, dry_run=True, plan=record.plan, changes=planned)


def _scale_out_session(
    record: RunRecord, params: SessionTierParameters, prepared: SessionPlan, tags: dict[str, str]
) -> TierOutcome:
    plan, business = prepared.tier, prepared.business
    # 1-2. Image the session server; create session servers from the image.
    launched = steps.launch_from_image(record, plan, params, tags)
    # 3. Internal CLB, TCP listener, bind old and new session servers, let the VIP in.
    balanced = steps.put_behind_load_balancer(record, plan, params, [plan.source, *launched.servers], "INTERNAL", tags)
    vip, listener_port = balanced.load_balancer.vip or "", params.load_balancer.listener_port
    new_url = auth_url(vip, listener_port, params.health.auth_path)
    with record.step(f"the VIP answers auth requests at {new_url}, round robin over every server"):
        probes = {f"{new_url} #{n + 1}": _auth_probe(new_url, params) for n in range(len(balanced.bound))}
        steps.verify(record, probes, "the auth service through the VIP", params.timeouts.health, 1.0)
    # 4. Point every business server's authServerUrl at the VIP: one canary first, then the rest.
    profile = params.runtime_profile()
    canary, rest = business[0], business[1:]
    with record.step(f"canary: repoint business server {canary.instance_id} and restart it"):
        record.changes.append(repoint(canary, params.ssh, profile, new_url, record.run_key))
        _verify_business(record, params, [canary], new_url)
    if rest:
        with record.step(f"repoint the other {len(rest)} business server(s) and restart them"):
            futures = repoint.map(
                rest, unmapped(params.ssh), unmapped(profile), unmapped(new_url), unmapped(record.run_key)
            )
            record.changes += [f.result() for f in futures]
            _verify_business(record, params, rest, new_url)
    return _outcome(record, plan, launched, balanced)


def _auth_probe(url: str, params: SessionTierParameters) -> Any:
    return lambda: probe_auth(url, params.health.timeout_seconds)


def _verify_business(record: RunRecord, params: Any, servers: list[Any], expected_url: str | None) -> None:
    probes = {s.instance_id: _business_probe(s.private_ip, params, expected_url) for s in servers}
    steps.verify(record, probes, f"{len(servers)} business server(s) healthy", params.timeouts.health, 1.0)


def _business_probe(host: str, params: Any, expected_url: str | None) -> Any:
    return lambda: probe_business(host, params.health, expected_url)


def _outcome(record: RunRecord, plan: TierPlan, launched: steps.Launched, balanced: steps.Balanced) -> TierOutcome:
    """What a tier's run made, for the caller; also the servers table of the report."""
    record.servers = [
        {
            "instance_id": s.instance_id,
            "role": "existing" if s.instance_id == plan.source.instance_id else "new",
            "tier": record.tier,
            "private_ip": s.private_ip,
            "zone": s.zone,
            "bound_to_clb": s.instance_id in balanced.bound,
            "not_bound_because": balanced.skipped.get(s.instance_id, ""),
        }
        for s in [plan.source, *launched.servers]
    ]
    return TierOutcome(
        tier=record.tier,
        run_key=record.run_key,
        dry_run=False,
        image_id=launched.image.image_id,
        new_instance_ids=[s.instance_id for s in launched.servers],
        load_balancer_id=balanced.load_balancer.load_balancer_id,
        vip=balanced.load_balancer.vip,
        listener_id=balanced.listener.listener_id,
        bound=balanced.bound,
        changes=record.changes,
    )


@flow(name="scale-out-business-tier", description="业务服务器扩容: the business servers behind a public CLB")
def scale_out_business_tier(params: BusinessTierParameters) -> TierOutcome:
    def prepare(key: str, tags: dict[str, str]) -> TierPlan:
        return preflight_tier(params, "business", "OPEN", steps.image_name(params, "business", key), tags)

    return _run_tier(
        "scale-out-business-tier",
        "business",
        params,
        BUSINESS_STEPS,
        "preflight: placement, state, quota, image name",
        prepare,
        _plan_business,
        _scale_out_business,
    )


def _plan_business(record: RunRecord, params: BusinessTierParameters, plan: TierPlan) -> TierOutcome:
    steps.plan_tier(record, params, plan, "OPEN")
    return TierOutcome(tier="business", run_key=record.run_key, dry_run=True, plan=record.plan)


def _scale_out_business(
    record: RunRecord, params: BusinessTierParameters, plan: TierPlan, tags: dict[str, str]
) -> TierOutcome:
    # 1-2. Image the business server (it already carries the session tier's authServerUrl); launch from it.
    launched = steps.launch_from_image(record, plan, params, tags)
    with record.step("the new business servers' app is healthy (the image starts it at boot)"):
        _verify_business(record, params, launched.servers, None)
    # 3. Public CLB, TCP listener, bind old and new business servers, let the VIP in.
    balanced = steps.put_behind_load_balancer(record, plan, params, [plan.source, *launched.servers], "OPEN", tags)
    vip = balanced.load_balancer.vip or ""
    with record.step(f"the business app answers through the VIP {vip}:{params.load_balancer.listener_port}"):
        through = params.health.model_copy(update={"port": params.load_balancer.listener_port})
        url = f"{vip}:{through.port}"
        steps.verify(record, {url: lambda: probe_business(vip, through, None)},
                     "the business app through the VIP", params.timeouts.health, 1.0)  # fmt: skip
    return _outcome(record, plan, launched, balanced)


@flow(name="scale-out-cluster", description="集群版架构扩容: the session tier first, then the business tier")
def scale_out_cluster(params: ClusterParameters) -> list[TierOutcome]:
    """Session tier first, so the business server imaged afterwards already carries the new authServerUrl."""
    session = params.session.model_copy(update={"dry_run": params.dry_run or params.session.dry_run})
    business = params.business.model_copy(update={"dry_run": params.dry_run or params.business.dry_run})
    return [scale_out_session_tier(session), scale_out_business_tier(business)]
