"""The guide's step 3: a load balancer (the tier's own, or a new one), its TCP listener, the VIP let through
the servers' security groups, the servers bound, and each bound server healthy behind it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from flows.parameters import TierParameters
from flows.scale_out_steps.preflight import TierPlan
from flows.shared.ledger import Binding, remember_binding, unbind
from flows.shared.tier_run import TierRun
from tasks import clb, cvm, vpc
from tasks.health import Probe


class NothingToBind(Exception):
    pass


class Balanced(BaseModel):
    load_balancer: clb.LoadBalancer
    listener: clb.Listener
    bound: list[str] = Field(description="servers bound to the listener (old and new)")
    skipped: dict[str, str] = Field(default_factory=dict, description="servers not bound, and why")


def load_balancer(run: TierRun[TierParameters], plan: TierPlan, clb_type: str) -> clb.LoadBalancer:
    """购买负载均衡: the tier's CLB when it has one (a repeat scale-out never makes a second), else a new one."""
    source, options = plan.source, run.params.load_balancer
    with run.step(f"{'use' if plan.load_balancer else 'create'} the {clb_type} load balancer"):
        if plan.load_balancer is not None:
            balancer = plan.load_balancer
            run.record.add("clb", balancer.load_balancer_id, created=False, detail=f"VIP {balancer.vip}")
            return balancer
        run.ledger.add(
            f"{clb_type} load balancer of this run",
            lambda: clb.delete_tagged_load_balancers(run.region, run.tags, run.params.timeouts.undo),
            f"delete the CLBs tagged tcscale:run={run.key}, tcscale:tier={run.tier} in the CLB console",
        )
        balancer = clb.create_load_balancer(
            source.region,
            options.name or f"tcscale-{run.tier}",
            clb_type,  # type: ignore[arg-type]
            source.vpc_id,
            source.subnet_id,
            source.project_id,
            run.tags,
            run.client_token("clb"),
            run.params.timeouts.clb,
        )
        run.record.add("clb", balancer.load_balancer_id, created=True, detail=f"{clb_type}, VIP {balancer.vip}")
        return balancer


def tcp_listener(
    run: TierRun[TierParameters], balancer: clb.LoadBalancer, backend_port: int, health_path: str
) -> clb.Listener:
    """创建监听器: TCP, listener port as given, the app's port behind it; an existing one on that port is reused."""
    options, timeout = run.params.load_balancer, run.params.timeouts.clb
    lb_id, name = balancer.load_balancer_id, clb.listener_name(run.key, run.tier)
    with run.step(f"TCP listener {options.listener_port} -> {backend_port} on {lb_id}"):
        existing = clb.listener_on(run.region, lb_id, options.listener_port)
        ours = existing is None or existing.name == name
        if ours:
            run.ledger.add(
                f"listener {name} on {lb_id}",
                lambda: clb.delete_named_listeners(run.region, lb_id, name, run.params.timeouts.undo),
                f"delete the listener named {name} of {lb_id} in the CLB console",
            )
        listener = clb.ensure_tcp_listener(
            run.region, lb_id, options.listener_port, name, options.health_check, health_path, timeout
        )
        detail = f"TCP {options.listener_port} -> {backend_port}"
        run.record.add("listener", f"{lb_id}/{listener.listener_id}", created=ours, detail=detail)
        return listener


def admit_vip(
    run: TierRun[TierParameters], balancer: clb.LoadBalancer, servers: list[cvm.Server], backend_port: int
) -> None:
    """放通安全组: the VIP through every bound server's security groups (the guide's warning).

    Before binding: the CLB's first health checks then pass at once instead of needing `healthy_threshold`
    good intervals. A rule that already does this is left alone, unless it carries this run's mark (an
    earlier attempt of this run added it, and its answer was lost).
    """
    with run.step(f"let the VIP {balancer.vip} through the servers' security groups"):
        for group in sorted({g for s in servers for g in s.security_group_ids}):
            rule = vpc.IngressRule(
                security_group_id=group,
                cidr_block=f"{balancer.vip}/32",
                port=str(backend_port),
                description=vpc.run_marker(run.key, f"CLB {balancer.load_balancer_id}"),
            )
            found = vpc.existing_description(run.region, rule)
            ours = found is None or vpc.marked_by(found, run.key)
            if ours:
                run.ledger.add(
                    f"ingress TCP {rule.port} from {rule.cidr_block} in {group}",
                    lambda rule=rule: vpc.revoke(run.region, rule),
                    f"delete the inbound rule TCP:{rule.port} from {rule.cidr_block} of {group} in the VPC console",
                )
            vpc.admit(run.region, rule)
            run.record.add(
                "security-group", group, created=ours, detail=f"ingress TCP {rule.port} from {rule.cidr_block}"
            )


def bindable(servers: list[cvm.Server]) -> tuple[list[cvm.Server], dict[str, str]]:
    """The servers RegisterTargets would take (not isolated, not expired), and why the others are left out."""
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


def bind(
    run: TierRun[TierParameters],
    balancer: clb.LoadBalancer,
    listener: clb.Listener,
    servers: list[cvm.Server],
    backend_port: int,
) -> list[str]:
    """绑定云主机: bind each server on the backend port unless that pair is bound already (the server may also be
    bound on other ports of the listener: those are not the run's); returns every bound server's id."""
    lb_id, timeout = balancer.load_balancer_id, run.params.timeouts.clb
    ids = [s.instance_id for s in servers]
    targets = clb.targets_on(ids, backend_port)
    with run.step(f"bind {len(ids)} server(s) to {lb_id}"):
        if listener.name != clb.listener_name(run.key, run.tier):  # not this run's listener: undo by unbinding
            bound = clb.registered_targets(run.region, lb_id, listener.listener_id)
            new = [t for t in targets if t not in bound]
            if new:
                binding = Binding(region=run.region, load_balancer_id=lb_id, listener_id=listener.listener_id,
                                  targets=new)  # fmt: skip
                remember_binding(run.key, binding)
                run.ledger.add(
                    f"{len(new)} server(s) bound to {lb_id}/{listener.listener_id}",
                    lambda: unbind(binding, run.params.timeouts.undo),
                    f"unbind {binding.described()} (instance:port) from listener {listener.listener_id} of {lb_id} "
                    "in the CLB console",
                )
        clb.register_targets(run.region, lb_id, listener.listener_id, targets, timeout)
    return ids


def wait_targets_healthy(
    run: TierRun[TierParameters],
    balancer: clb.LoadBalancer,
    listener: clb.Listener,
    ids: list[str],
    backend_port: int,
) -> None:
    """Every bound server healthy behind the listener on the backend port, by name: the CLB's own health check."""
    timeouts, lb_id = run.params.timeouts, balancer.load_balancer_id
    targets = clb.targets_on(ids, backend_port)
    with run.step(f"wait until each of the {len(ids)} bound server(s) is healthy behind {lb_id}"):
        health: dict[clb.Target, bool] = {}
        try:
            health = clb.wait_targets_healthy(
                run.region, lb_id, listener.listener_id, targets, timeouts.health, min(timeouts.poll, 1.0)
            )
        finally:
            health = health or clb.target_health(run.region, lb_id, listener.listener_id)  # the last word
            run.record.probes += [
                Probe(
                    target=f"{t.instance_id} behind {lb_id}/{listener.listener_id}",
                    ok=bool(health.get(t)),
                    detail=f"port {t.port} healthy (DescribeTargetHealth)"
                    if health.get(t)
                    else f"port {t.port} not healthy (DescribeTargetHealth)",
                )
                for t in targets
            ]
