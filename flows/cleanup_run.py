"""`cleanup-run`: undo everything one run changed, for a run killed before it could undo itself.

A run marks what it makes: instances, images and CLBs carry the tag `tcscale:run=<key>`, its listeners
are named `tcscale-<tier>-<key>`, security group rules it adds say `tcscale:<key>` in their description,
each sdk.config it rewrote has a backup named after it, its bindings to a CLB it did not create are
kept in the Prefect Variable `tcscale-bindings-<key>`, a desired capacity it changed in `tcscale-capacity-<key>`
(put back only while the group still desires what the run wrote), plan-capacity's schedule changes in
`tcscale-plan-<key>-<n>` (flows/capacity_plan_steps/kept.py), and its scaling groups carry the tag too (their launch
configuration, attached servers, scheduled actions and alarm policies are found through the group); its changes of a
group it did not create are kept in `tcscale-groups-<key>` (fields put back only while they hold what the run wrote).
Given a `tier`, it undoes only what names that tier (configure-autoscaling cancelled after its other tier finished):
resources tagged `tcscale:tier=<tier>`, the tier's listeners, kept changes of the tier; bindings and rules (no tier in
their marks, and configure-autoscaling makes none) stay. This flow
finds them by those marks alone (the key matching exactly: `abc` never touches `abc-2`) and undoes them with the
same functions a failed run uses, under both tiers' locks. One failure (an unreachable server) does not stop
the others; it is reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.autoscaling_steps import plan
from flows.capacity_plan_steps import kept_undo
from flows.capacity_plan_steps.kept import forget_changes
from flows.declaration import declared
from flows.parameters import CleanupParameters
from flows.scale_out_steps.preflight import select_servers
from flows.shared.ledger import (
    Ledger,
    Undone,
    forget_bindings,
    forget_capacity,
    forget_group_changes,
    remembered_bindings,
    remembered_capacities,
    remembered_group_changes,
    restore_capacity,
    unbind,
    undo_group_change,
)
from flows.shared.tier_lock import LEASE_SECONDS, tier_lock
from flows.shared.tier_run import settle_all
from tasks import autoscaling as asg
from tasks import autoscaling_policies as policies
from tasks import autoscaling_undo, business_server, clb, cvm, vpc
from tasks.autoscaling_launch_configurations import delete_tagged_launch_configurations, tagged_launch_configurations
from tasks.cvm import RUN_TAG, TIER_TAG, Server

TIERS = ("session", "business")
# Started right after a run died (by the automation, an `apply`, the operator), it waits for the tiers until the dead
# run's lock lease has expired, rather than failing TierBusy after a person's short wait; a live run's undo is
# waited for the same way.
LOCK_WAIT_SECONDS = LEASE_SECONDS + 60


class Removed(BaseModel):
    run_key: str
    dry_run: bool
    configs_restored: list[str] = Field(default_factory=list, description="instance ids")
    targets_unbound: list[str] = Field(default_factory=list, description="lb/listener: instance:port pairs")
    rules_revoked: list[str] = Field(default_factory=list, description="sg-id: rule")
    listeners: list[str] = Field(default_factory=list, description="lb/listener name")
    load_balancers: list[str] = Field(default_factory=list)
    instances: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)
    scaling_groups: list[str] = Field(default_factory=list, description="group id (name)")
    capacities_restored: list[str] = Field(default_factory=list, description="group id: desired run's -> before")
    fields_restored: list[str] = Field(
        default_factory=list, description="group id: fields of a group it did not create, run's -> before"
    )
    launch_configurations: list[str] = Field(default_factory=list, description="tagged with the run")
    scheduled_actions: list[str] = Field(default_factory=list, description="group id/name")
    alarm_policies: list[str] = Field(default_factory=list, description="group id/name")
    servers_detached: list[str] = Field(default_factory=list, description="group id: instance ids, bound again")
    group_servers: list[str] = Field(default_factory=list, description="launched by a group, terminated with it")
    failed: list[Undone] = Field(default_factory=list, description="what could not be undone, with the fix")
    configs_left: list[Undone] = Field(
        default_factory=list, description="sdk.config whose authServerUrl was set since the run: left, with the fix"
    )
    capacities_left: list[Undone] = Field(
        default_factory=list, description="desired capacities set since the run: left, with the fix"
    )
    fields_left: list[Undone] = Field(
        default_factory=list, description="scaling group fields set since the run: left, with the fix"
    )
    schedules_restored: list[str] = Field(default_factory=list, description="plan-capacity's schedule changes undone")
    schedules_left: list[Undone] = Field(
        default_factory=list, description="plan-capacity's schedules changed since the run: left, with the fix"
    )

    def markdown(self) -> str:
        verb = "would undo" if self.dry_run else "undid"
        rows = [
            ("sdk.config restored", self.configs_restored),
            ("sdk.config left: authServerUrl set since the run", [u.what for u in self.configs_left]),
            ("servers unbound from a CLB it did not create", self.targets_unbound),
            ("security group rules revoked", self.rules_revoked),
            ("listeners deleted", self.listeners),
            ("load balancers deleted", self.load_balancers),
            ("instances terminated", self.instances),
            ("images deleted", self.images),
            ("alarm policies deleted", self.alarm_policies),
            ("scheduled actions deleted", self.scheduled_actions),
            ("servers detached from a scaling group and bound to its CLB again", self.servers_detached),
            ("servers the scaling group launched, terminated with it", self.group_servers),
            ("desired capacities put back", self.capacities_restored),
            ("desired capacities left: set since the run", [u.what for u in self.capacities_left]),
            ("fields of a scaling group it did not create put back", self.fields_restored),
            ("scaling group fields left: set since the run", [u.what for u in self.fields_left]),
            ("plan-capacity's schedule changes undone", self.schedules_restored),
            ("scaling groups deleted", self.scaling_groups),
            ("launch configurations deleted", self.launch_configurations),
        ]
        lines = [f"# cleanup-run {self.run_key}: {verb}", "", "| what | ids |", "|---|---|"]
        lines += [f"| {what} | {', '.join(ids) or '-'} |" for what, ids in rows]
        edited = self.configs_left + self.capacities_left + self.fields_left + self.schedules_left
        if edited:
            lines += ["", "## Edited since the run: left as they are", "", "| what | now | fix |", "|---|---|---|"]
            lines += [f"| {u.what} | {u.detail} | {u.fix} |" for u in edited]
        if self.failed:
            lines += ["", "## Could not be undone: fix by hand", "", "| what | error | fix |", "|---|---|---|"]
            lines += [f"| {u.what} | {u.detail} | {u.fix} |" for u in self.failed]
        return "\n".join(lines) + "\n"


def find_marks(params: CleanupParameters, removed: Removed, ledger: Ledger) -> None:
    """Every mark of the run, in the order a run makes them (the ledger undoes newest first)."""
    region, key, timeout = params.region, params.run_key, params.timeout
    tags = run_marks(params)
    fix_tag = "tagged " + ", ".join(f"{k}={v}" for k, v in tags.items())
    removed.images = cvm.tagged_images(region, tags)
    if removed.images:
        ledger.add("images", lambda: cvm.delete_tagged_images(region, tags, timeout), f"delete the images {fix_tag}")
    removed.instances = cvm.tagged_servers(region, tags)
    if removed.instances:
        ledger.add("instances", lambda: cvm.terminate_tagged(region, tags, timeout), f"terminate the servers {fix_tag}")
    removed.load_balancers = [lb.load_balancer_id for lb in clb.tagged_load_balancers(region, tags)]
    if removed.load_balancers:
        ledger.add("load balancers", lambda: clb.delete_tagged_load_balancers(region, tags, timeout),
                   f"delete the CLBs {fix_tag}")  # fmt: skip
    for balancer in clb.all_load_balancers(region):
        if balancer.load_balancer_id in removed.load_balancers:
            continue  # its listeners go with it
        lb_id = balancer.load_balancer_id
        for tier in (params.tier,) if params.tier else TIERS:
            name = clb.listener_name(key, tier)
            if any(item.get("ListenerName") == name for item in clb.listeners(region, lb_id)):
                removed.listeners.append(f"{lb_id}/{name}")
                ledger.add(f"listener {name} of {lb_id}",
                           lambda lb_id=lb_id, name=name: clb.delete_named_listeners(region, lb_id, name, timeout),
                           f"delete the listener {name} of {lb_id} in the CLB console")  # fmt: skip
    if params.tier is None:  # bindings and rules name no tier: a one-tier cleanup (configure-autoscaling's) has none
        find_bindings_and_rules(params, removed, ledger)
    if params.restore_configs:
        find_configs(params, removed, ledger)
    find_autoscaling(params, removed, ledger)  # made after the scale-out's resources: added last, undone first
    find_capacities(params, removed, ledger)  # a group's capacity changed last of all: put back first
    find_schedules(params, removed, ledger)  # plan-capacity's, in the order it made them


def run_marks(params: CleanupParameters) -> dict[str, str]:
    """The tags of the run's resources (of its one tier, when given)."""
    return {RUN_TAG: params.run_key, **({TIER_TAG: params.tier} if params.tier else {})}


def find_bindings_and_rules(params: CleanupParameters, removed: Removed, ledger: Ledger) -> None:
    region, key, timeout = params.region, params.run_key, params.timeout
    for rule in vpc.rules_of_run(region, key):
        removed.rules_revoked.append(f"{rule.security_group_id}: {rule.protocol} {rule.port} from {rule.cidr_block}")
        ledger.add(f"rule of {rule.security_group_id}", lambda rule=rule: vpc.revoke(region, rule),
                   f"delete the inbound rule described {rule.description!r} of {rule.security_group_id}")  # fmt: skip
    for binding in remembered_bindings(key):
        gone = clb.describe_load_balancer(region, binding.load_balancer_id) is None
        if gone or binding.load_balancer_id in removed.load_balancers:
            continue  # its bindings go with it
        bound = clb.registered_targets(region, binding.load_balancer_id, binding.listener_id)
        still = ", ".join(str(t) for t in binding.targets if t in bound)  # instance:port, the run's pairs only
        if still:
            removed.targets_unbound.append(f"{binding.load_balancer_id}/{binding.listener_id}: {still}")
            ledger.add(f"bindings to {binding.load_balancer_id}", lambda b=binding: unbind(b, timeout),
                       f"unbind {still} (instance:port) from {binding.load_balancer_id} in the CLB "
                       "console")  # fmt: skip


def find_capacities(params: CleanupParameters, removed: Removed, ledger: Ledger) -> None:
    """The desired capacities the run changed (kept before the change), put back only while a group still desires
    what the run wrote; a group of the run's own goes anyway."""
    region, timeout, own = params.region, params.timeout, {g.split(" ")[0] for g in removed.scaling_groups}
    for change in remembered_capacities(params.run_key):
        if params.tier is not None and change.tier != params.tier:
            continue
        group = asg.describe_group(region, change.group_id)
        back = change.target_min is None or group is None or group.min_size != change.target_min
        if group is None or change.group_id in own or (group.desired == change.previous and back):
            continue
        if group.desired != change.target:
            removed.capacities_left.append(Undone(what=change.described(), outcome="left",
                                                  detail=f"desired capacity is {group.desired}, set since the run",
                                                  fix=f"to go back to before the run: set the desired capacity of "
                                                  f"{change.group_id} to {change.previous}"))  # fmt: skip
            continue
        removed.capacities_restored.append(f"{change.group_id}: {change.target} -> {change.previous}")
        ledger.add(change.described(), lambda c=change: restore_capacity(c, timeout),
                   f"set the desired capacity of {change.group_id} back to {change.previous} if it is still "
                   f"{change.target}")  # fmt: skip


def find_schedules(params: CleanupParameters, removed: Removed, ledger: Ledger) -> None:
    """plan-capacity's schedule changes (kept before each was made: Auto Scaling scheduled actions, Prefect
    schedules, the fixed peak it paused), each put back only while the schedule still holds what the run wrote."""
    for change, found in kept_undo.pending(params.run_key):
        if params.tier is not None and change.tier != params.tier:
            continue
        if found == "left":
            detail = f"{change.name} changed since the run"
            removed.schedules_left.append(Undone(what=change.what, outcome="left", detail=detail, fix=change.fix))
        elif found == "to undo":
            removed.schedules_restored.append(change.what)
            ledger.add(change.what, lambda c=change: kept_undo.undo(c), change.fix)


def find_autoscaling(params: CleanupParameters, removed: Removed, ledger: Ledger) -> None:
    """The run's launch configurations and scaling groups (by its tag) and what `configure-autoscaling` made in
    each of its groups, in the order it makes them. Nothing without the run's tag: an operator's launch
    configuration stays, whether a group of the run used it or none does."""
    region, timeout, tags = params.region, params.timeout, run_marks(params)
    removed.launch_configurations = [lc.launch_configuration_id for lc in tagged_launch_configurations(region, tags)]
    if removed.launch_configurations:  # added before the groups: deleted after them, once no group of the run uses it
        ledger.add("launch configurations", lambda: delete_tagged_launch_configurations(region, tags),
                   f"delete the launch configurations tagged tcscale:run={params.run_key} once no scaling group "
                   "uses them")  # fmt: skip
    for group in asg.tagged_groups(region, tags):
        gid = group.group_id
        removed.scaling_groups.append(f"{gid} ({group.name})")
        members = asg.members(region, gid)
        launched = [m.instance_id for m in members if m.creation_type != "MANUAL_ATTACHING"]
        removed.group_servers += launched
        ledger.add(f"scaling group {gid}", lambda gid=gid: autoscaling_undo.delete_group(region, gid, timeout),
                   f"set min/desired of {gid} to 0, then delete it (its servers {', '.join(launched) or 'none'} "
                   "are terminated with it)")  # fmt: skip
        attached = sorted(m.instance_id for m in members if m.creation_type == "MANUAL_ATTACHING")
        if attached:
            # the tier's servers were behind the group's CLB before the attach; detaching deregisters them
            fwd = group.forward[0] if group.forward else None
            was_bound = clb.targets_on(attached, fwd.port) if fwd else []
            removed.servers_detached.append(f"{gid}: {', '.join(attached)}")
            target = f"{fwd.load_balancer_id}/{fwd.listener_id} port {fwd.port}" if fwd else "their CLB"
            ledger.add(f"{', '.join(attached)} attached to {gid}",
                       lambda gid=gid, ids=attached, fwd=fwd, was=was_bound: autoscaling_undo.detach(
                           region, gid, ids, fwd, was, timeout),
                       f"unprotect and remove {', '.join(attached)} from {gid}, then bind them to {target} "
                       "again")  # fmt: skip
        # scheduled actions and alarm policies carry no tag: the run's are its names, in a group of the run
        tier = group.tags.get(TIER_TAG, "")
        for action in [a for a in policies.scheduled_actions(region, gid) if a.name in plan.schedule_names(tier)]:
            removed.scheduled_actions.append(f"{gid}/{action.name}")
            ledger.add(f"scheduled action {action.name}",
                       lambda gid=gid, name=action.name: policies.delete_scheduled_action(region, gid, name),
                       f"delete scheduled action {action.name} of {gid}")  # fmt: skip
        for policy in [p for p in policies.alarm_policies(region, gid) if p.name in plan.policy_names(tier)]:
            removed.alarm_policies.append(f"{gid}/{policy.name}")
            ledger.add(f"alarm policy {policy.name}",
                       lambda gid=gid, name=policy.name: policies.delete_alarm_policy(region, gid, name),
                       f"delete scaling policy {policy.name} of {gid}")  # fmt: skip
    find_group_changes(params, removed, ledger)  # made after the launch configuration it may point to: undone before


def find_group_changes(params: CleanupParameters, removed: Removed, ledger: Ledger) -> None:
    """configure-autoscaling's changes of groups it did not create, kept before each was made (a group of the run's
    own goes whole): fields put back only while they hold what the run wrote, its servers detached, its scheduled
    actions and alarm policies deleted; the operator's own stay."""
    region, timeout, own = params.region, params.timeout, {g.split(" ")[0] for g in removed.scaling_groups}
    for change in remembered_group_changes(params.run_key, params.tier):
        gid = change.group_id
        group = asg.describe_group(region, gid)
        if group is None or gid in own:
            continue
        if change.kind == "fields":
            holding = autoscaling_undo.still_written(group, change.written)
            as_before = autoscaling_undo.still_written(group, change.previous)  # never written, or put back
            for name in [k for k in change.written if k not in holding and k not in as_before]:
                removed.fields_left.append(Undone(what=f"{name} of {gid}", outcome="left",
                                                  detail=f"{name} is not {change.written[name]}: set since the run",
                                                  fix=f"to go back to before the run: set {name} of {gid} to "
                                                  f"{change.previous[name]}"))  # fmt: skip
            if not holding:
                continue
            removed.fields_restored.append(f"{gid}: " + ", ".join(
                f"{k} {change.written[k]} -> {change.previous[k]}" for k in holding))  # fmt: skip
        elif change.kind == "attached":
            present = [m.instance_id for m in asg.members(region, gid) if m.instance_id in change.instance_ids]
            if present:
                removed.servers_detached.append(f"{gid}: {', '.join(present)}")
        else:
            names = policies.scheduled_actions if change.kind == "scheduled action" else policies.alarm_policies
            if change.name not in {item.name for item in names(region, gid)}:
                continue
            listed = removed.scheduled_actions if change.kind == "scheduled action" else removed.alarm_policies
            listed.append(f"{gid}/{change.name}")
        ledger.add(change.described(), lambda c=change: undo_group_change(c, timeout), change.fix())


def find_configs(params: CleanupParameters, removed: Removed, ledger: Ledger) -> None:
    profile = params.runtime_profile()
    # The run's own new servers are terminated anyway (and carry its backup in their image): not theirs to restore.
    business = [
        s
        for s in select_servers(params.region, params.business_servers)
        if s.state == "RUNNING" and s.tags.get(RUN_TAG) != params.run_key
    ]
    futures = business_server.run_config.map(business, unmapped(params.ssh), unmapped(profile),
                                             unmapped(params.run_key))  # fmt: skip
    settle_all(futures)
    for server, future in zip(business, futures, strict=True):
        fix = (f"on {server.instance_id}, if authServerUrl still holds what the run wrote, copy the oldest "
               f"{profile.config_path}.tcscale-{params.run_key}-*.bak back and run `{profile.restart_command}`; if it "
               "was set since, keep it")  # fmt: skip
        try:
            found = future.result()
        except Exception as error:  # unreachable: still remove the cloud resources; report it
            removed.failed.append(Undone(what=f"{server.instance_id} sdk.config", outcome="FAILED",
                                         detail=f"could not check: {error}", fix=fix))  # fmt: skip
            continue
        if found is None:
            continue
        if found.runs_own:
            removed.configs_restored.append(server.instance_id)
            ledger.add(f"{profile.config_path} of {server.instance_id}", _restorer(server, params), fix)
        else:  # repointed by hand since the run: not the run's to undo (restore_run_backup would refuse it too)
            removed.configs_left.append(left_as_edited(found, profile.restart_command))


def left_as_edited(found: business_server.RunConfig, restart_command: str) -> Undone:
    wrote = " or ".join(found.written) or "no record of it"
    return Undone(
        what=f"{found.instance_id} {found.path}",
        outcome="left",
        detail=f"authServerUrl is {found.value}, not what the run wrote ({wrote}); the file before the run: "
        f"{found.backup}",
        fix=f"to keep {found.value}: nothing to do (delete {found.backup} once sure); to go back to before the run: "
        f"copy {found.backup} over {found.path} on {found.instance_id} and run `{restart_command}`",
    )


def _restorer(server: Server, params: CleanupParameters) -> Callable[[], bool]:
    profile = params.runtime_profile()
    return lambda: business_server.restore_run_backup(
        server, params.ssh, profile, params.health, params.run_key, params.timeout
    )


def forget_undone(params: CleanupParameters) -> None:
    """Everything kept for the run (for its one tier: that tier's) is undone: no more use for it."""
    key, tier = params.run_key, params.tier
    if tier is None:
        forget_bindings(key)
        forget_capacity(key)
        forget_changes(key)  # plan-capacity's (a one-tier cleanup is configure-autoscaling's: it keeps none)
    for change in remembered_capacities(key) if tier is not None else []:
        if change.tier == tier:
            forget_capacity(key, change.group_id)
    forget_group_changes(key, tier)


@contextlib.contextmanager
def both_tier_locks() -> Iterator[None]:
    with tier_lock(TIERS[0], LOCK_WAIT_SECONDS), tier_lock(TIERS[1], LOCK_WAIT_SECONDS):  # one order: no deadlock
        yield


@flow(name="cleanup-run", description="undo everything a scale-out run changed, found by its marks")
def cleanup_run(params: CleanupParameters) -> Removed:
    params = declared(params)
    removed = Removed(run_key=params.run_key, dry_run=params.dry_run)
    ledger = Ledger()
    with contextlib.nullcontext() if params.dry_run else both_tier_locks():
        find_marks(params, removed, ledger)
        if not params.dry_run:
            removed.failed += [u for u in ledger.undo_all(get_run_logger()) if u.outcome == "FAILED"]
            if not removed.failed:
                forget_undone(params)
    create_markdown_artifact(removed.markdown(), key=f"cleanup-run-{params.run_key}", description="cleanup-run report")
    if removed.failed:
        raise RuntimeError(
            f"cleanup-run {params.run_key}: {len(removed.failed)} thing(s) could not be undone (see the report): "
            + "; ".join(f"{u.what}: {u.detail} -> {u.fix}" for u in removed.failed)
        )
    return removed
