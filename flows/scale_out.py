"""The guide's cluster expansion ("集群版架构扩容"), tier by tier, as Prefect flows.

Each flow: preflight (nothing changes if anything is wrong) -> the guide's steps inside one
Prefect transaction (a failure rolls back everything this run made, in reverse) -> verification
-> a report. `dry_run` stops after preflight and records the plan.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, unmapped
from prefect.transactions import transaction
from pydantic import BaseModel, Field

from flows import steps
from flows.parameters import BusinessTierParameters, ClusterParameters, SessionTierParameters
from flows.preflight import PreflightFailed, TierPlan, placement_mismatches, preflight_tier, select_servers
from flows.records import RunRecord
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


SESSION_STEPS = 9
BUSINESS_STEPS = 8


@flow(
    name="scale-out-session-tier", description="会话管理服务器扩容: the session (auth) servers behind an internal CLB"
)
def scale_out_session_tier(params: SessionTierParameters) -> TierOutcome:
    key = steps.run_key(params)
    record = RunRecord("scale-out-session-tier", "session", params.region, key, params.dry_run, SESSION_STEPS)
    tags = steps.ownership_tags(key, "session")
    outcome = "failed"
    try:
        with record.step("preflight: placement, state, quota, image name, business servers' sdk.config over SSH"):
            plan = preflight_tier(params, "session", "INTERNAL", _image_name(params, key), tags)
            business, planned = preflight_business_servers(params, plan)
        if params.dry_run:
            result = _plan_session(record, params, plan, business, planned)
            outcome = "planned"
            return result
        with steps.tier_lock("session"), transaction():
            result = _scale_out_session(record, params, plan, business, tags)
        outcome = "succeeded"
        return result
    finally:
        report = record.publish(outcome)
        if outcome != "failed":
            result.report = report


def _image_name(params: SessionTierParameters | BusinessTierParameters, key: str) -> str:
    tier = "session" if isinstance(params, SessionTierParameters) else "business"
    return params.image.name or f"tcscale-{tier}-{key[:8]}"


def preflight_business_servers(params: SessionTierParameters, plan: TierPlan) -> tuple[list[Any], list[Change]]:
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


def _plan_session(
    record: RunRecord, params: SessionTierParameters, plan: TierPlan, business: list[Any], planned: list[Change]
) -> TierOutcome:
    steps.plan_tier(record, params, plan, "INTERNAL", _image_name(params, record.run_key))
    record.plan += [
        f"rewrite authServerUrl on {len(business)} business server(s) (canary {business[0].instance_id} first), "
        f"restart with {params.runtime}",
    ]
    record.changes += planned
    return TierOutcome(tier="session", run_key=record.run_key, dry_run=True, plan=record.plan, changes=planned)


def _scale_out_session(
    record: RunRecord, params: SessionTierParameters, plan: TierPlan, business: list[Any], tags: dict[str, str]
) -> TierOutcome:
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
    record.servers = _server_rows(plan.source, launched.servers, balanced, "session")
    return TierOutcome(
        tier="session",
        run_key=record.run_key,
        dry_run=False,
        image_id=launched.image.image_id,
        new_instance_ids=[s.instance_id for s in launched.servers],
        load_balancer_id=balanced.load_balancer.load_balancer_id,
        vip=vip,
        listener_id=balanced.listener.listener_id,
        bound=balanced.bound,
        changes=record.changes,
    )


def _auth_probe(url: str, params: SessionTierParameters) -> Any:
    return lambda: probe_auth(url, params.health.timeout_seconds)


def _verify_business(record: RunRecord, params: Any, servers: list[Any], expected_url: str | None) -> None:
    probes = {s.instance_id: _business_probe(s.private_ip, params, expected_url) for s in servers}
    steps.verify(record, probes, f"{len(servers)} business server(s) healthy", params.timeouts.health, 1.0)


def _business_probe(host: str, params: Any, expected_url: str | None) -> Any:
    return lambda: probe_business(host, params.health, expected_url)


def _server_rows(source: Any, new: list[Any], balanced: steps.Balanced, tier: str) -> list[dict[str, Any]]:
    return [
        {
            "instance_id": s.instance_id,
            "role": "existing" if s.instance_id == source.instance_id else "new",
            "tier": tier,
            "private_ip": s.private_ip,
            "zone": s.zone,
            "bound_to_clb": s.instance_id in balanced.bound,
            "not_bound_because": balanced.skipped.get(s.instance_id, ""),
        }
        for s in [source, *new]
    ]


@flow(name="scale-out-business-tier", description="业务服务器扩容: the business servers behind a public CLB")
def scale_out_business_tier(params: BusinessTierParameters) -> TierOutcome:
    key = steps.run_key(params)
    record = RunRecord("scale-out-business-tier", "business", params.region, key, params.dry_run, BUSINESS_STEPS)
    tags = steps.ownership_tags(key, "business")
    outcome = "failed"
    try:
        with record.step("preflight: placement, state, quota, image name"):
            plan = preflight_tier(params, "business", "OPEN", _image_name(params, key), tags)
        if params.dry_run:
            result = _plan_business(record, params, plan)
            outcome = "planned"
            return result
        with steps.tier_lock("business"), transaction():
            result = _scale_out_business(record, params, plan, tags)
        outcome = "succeeded"
        return result
    finally:
        report = record.publish(outcome)
        if outcome != "failed":
            result.report = report


def _plan_business(record: RunRecord, params: BusinessTierParameters, plan: TierPlan) -> TierOutcome:
    steps.plan_tier(record, params, plan, "OPEN", _image_name(params, record.run_key))
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
    record.servers = _server_rows(plan.source, launched.servers, balanced, "business")
    return TierOutcome(
        tier="business",
        run_key=record.run_key,
        dry_run=False,
        image_id=launched.image.image_id,
        new_instance_ids=[s.instance_id for s in launched.servers],
        load_balancer_id=balanced.load_balancer.load_balancer_id,
        vip=vip,
        listener_id=balanced.listener.listener_id,
        bound=balanced.bound,
    )


@flow(name="scale-out-cluster", description="集群版架构扩容: the session tier first, then the business tier")
def scale_out_cluster(params: ClusterParameters) -> list[TierOutcome]:
    """Session tier first, so the business server imaged afterwards already carries the new authServerUrl."""
    session = params.session.model_copy(update={"dry_run": params.dry_run or params.session.dry_run})
    business = params.business.model_copy(update={"dry_run": params.dry_run or params.business.dry_run})
    return [scale_out_session_tier(session), scale_out_business_tier(business)]
