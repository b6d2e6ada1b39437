"""`cleanup-run`: what a killed run left behind, found by its tags alone, removed; the sdk.config put back.

A killed process runs no rollback hook. The test leaves exactly what such a run leaves: it calls the
run's own tasks directly (`task.fn`, no engine, no transaction) to image the session server, launch
two servers, create a CLB with its listener and targets, admit the VIP, and rewrite and restart the
business server, all marked with one run key. Another run's image must survive the cleanup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.cleanup_run import cleanup_run
from flows.parameters import CleanupParameters, ImageOptions
from flows.scale_out import scale_out_session_tier
from flows.scale_out_steps.preflight import select_servers
from flows.shared.ledger import Binding, remember_binding
from flows.shared.tier_run import client_token, ownership_tags
from sandbox.server import EmbeddedSandbox
from tasks import clb, config_rewrite, cvm, remote, sdkconfig, vpc
from tasks.business_server import AUTH_KEY, repoint_server, restore_run_backup
from tasks.clb import HealthCheckSpec
from tasks.cvm import Server
from tasks.health import HealthCheck, auth_url
from tasks.models import runtime_profile
from tests.flows.support import (
    BUSINESS_TAG,
    SDK_CONFIG,
    assert_business_untouched,
    business_configs,
    inventory,
    restart_fails,
    servers,
    session_params,
    ssh_settings,
)
from tests.flows.test_preflight import create_load_balancer

KILLED = "killed-run-1"
OTHER = "another-run-2"


def leave_what_a_killed_run_leaves(guide: dict[str, Any], key: str) -> dict[str, Any]:
    # as the flow does: listener on the port the sandbox serves for 80; backends and rules on the real port 80
    region, port, backend = guide["region"], guide["ports"]["map"]["80"], guide["ports"]["session"]
    (source,) = cvm.describe_servers(region, [guide["session_server"]["instance_id"]])
    tags = ownership_tags(key, "session")
    image = cvm.create_image.fn(source, f"tcscale-session-{key}", tags, reuse=False)
    cvm.wait_image_normal.fn(region, image, timeout=20, poll=0.2)
    ids = cvm.run_servers.fn(
        source, image.image_id, 2, source.instance_type, "tcscale-killed", tags, client_token(key, "session", "servers")
    )
    new: list[Server] = cvm.wait_servers_running.fn(region, ids, timeout=20, poll=0.2)
    balancer = clb.create_load_balancer.fn(
        region, "tcscale-session", "INTERNAL", source.vpc_id, source.subnet_id, source.project_id, tags,
        client_token(key, "session", "clb"), 20,
    )  # fmt: skip
    listener = clb.ensure_tcp_listener.fn(
        region, balancer.load_balancer_id, port, clb.listener_name(key, "session"), HealthCheckSpec(), "/mina_auth/", 20
    )
    bound = [source.instance_id, *ids]
    clb.register_targets.fn(region, balancer.load_balancer_id, listener.listener_id, clb.targets_on(bound, backend), 20)
    rule = vpc.IngressRule(
        security_group_id=source.security_group_ids[0],
        cidr_block=f"{balancer.vip}/32",
        port=str(backend),
        description=vpc.run_marker(key, f"CLB {balancer.load_balancer_id}"),
    )
    assert vpc.admit.fn(region, rule)
    (business,) = select_servers(region, BUSINESS_TAG)
    done = repoint_server.fn(
        business, ssh_settings(guide), runtime_profile("node-pm2"), health_check(guide),
        auth_url(balancer.vip or "", port), key, 20,
    )  # fmt: skip
    assert done.change.applied
    return {
        "image": image.image_id,
        "instances": sorted(i.instance_id for i in new),
        "load_balancer": balancer.load_balancer_id,
        "rule": f"{rule.security_group_id}: TCP {backend} from {balancer.vip}/32",
        "business": business.instance_id,
    }


def health_check(guide: dict[str, Any]) -> HealthCheck:
    return session_params(guide).health


def cleanup(guide: dict[str, Any], dry_run: bool = False, key: str = KILLED) -> Any:
    params = CleanupParameters(
        run_key=key,
        region=guide["region"],
        business_servers=BUSINESS_TAG,
        ssh=ssh_settings(guide),
        health=health_check(guide),
        timeout=20,
        dry_run=dry_run,
    )
    return cleanup_run(params)


def test_cleanup_removes_what_a_killed_run_left(guide, cloud_env: EmbeddedSandbox):
    before, configs = inventory(cloud_env), business_configs(cloud_env)
    (source,) = cvm.describe_servers(guide["region"], [guide["session_server"]["instance_id"]])
    others = cvm.create_image.fn(source, "another-run-image", ownership_tags(OTHER, "session"), reuse=False)
    cvm.wait_image_normal.fn(guide["region"], others, timeout=20, poll=0.2)
    before = inventory(cloud_env)  # with the other run's image, which must stay
    left = leave_what_a_killed_run_leaves(guide, KILLED)
    killed = inventory(cloud_env)
    assert killed != before and business_configs(cloud_env) != configs

    planned = cleanup(guide, dry_run=True)
    assert inventory(cloud_env) == killed, "a dry run removed something"
    assert business_configs(cloud_env) != configs, "a dry run restored a config"
    assert planned.dry_run and "would undo" in planned.markdown()
    assert planned.images == [left["image"]] and sorted(planned.instances) == left["instances"]
    assert planned.load_balancers == [left["load_balancer"]] and planned.rules_revoked == [left["rule"]]
    assert planned.configs_restored == [left["business"]]

    removed = cleanup(guide)

    assert removed.model_dump(exclude={"dry_run"}) == planned.model_dump(exclude={"dry_run"})
    assert inventory(cloud_env) == before, "cleanup left something behind, or removed another run's resource"
    assert_business_untouched(cloud_env, configs, guide["auth_server_url"])

    again = cleanup(guide)
    assert not (again.images or again.instances or again.load_balancers or again.rules_revoked)
    assert not again.configs_restored
    assert inventory(cloud_env) == before


def test_a_rerun_adopts_what_the_killed_attempt_made(guide, cloud_env: EmbeddedSandbox):
    """Re-running with the killed run's key finishes its work and duplicates nothing."""
    left = leave_what_a_killed_run_leaves(guide, KILLED)
    killed = inventory(cloud_env)
    params = session_params(guide, run_key=KILLED, image=ImageOptions(name=f"tcscale-session-{KILLED}"))

    outcome = scale_out_session_tier(params)

    assert outcome.image_id == left["image"]
    assert sorted(outcome.new_instance_ids) == left["instances"]
    assert outcome.load_balancer_id == left["load_balancer"]
    (change,) = outcome.changes
    assert not change.changed  # the killed attempt had already pointed the business server at the VIP
    after = inventory(cloud_env)
    assert after["instances"] == killed["instances"] and after["images"] == killed["images"]
    assert after["load_balancers"].keys() == killed["load_balancers"].keys()
    assert after["security_groups"] == killed["security_groups"]  # no second copy of the VIP's rule


def test_a_rerun_that_fails_undoes_the_killed_attempts_config_change_too(guide, cloud_env: EmbeddedSandbox):
    """The killed attempt's sdk.config change is the run's own (its backup is named after the run): when the
    re-run fails, its undo restores that server as well."""
    configs = business_configs(cloud_env)
    leave_what_a_killed_run_leaves(guide, KILLED)
    assert business_configs(cloud_env) != configs
    params = session_params(guide, run_key=KILLED, image=ImageOptions(name=f"tcscale-session-{KILLED}"))
    cloud_env.admin("POST", "faults", restart_fails(guide["business_server"]["instance_id"]))

    with pytest.raises(Exception, match="weapp did not restart"):
        scale_out_session_tier(params)

    assert_business_untouched(cloud_env, configs, guide["auth_server_url"])


def test_cleanup_finds_the_listener_and_bindings_on_a_clb_it_did_not_create(guide, cloud_env: EmbeddedSandbox):
    region, port = guide["region"], guide["ports"]["map"]["80"]
    lb_id = create_load_balancer(cloud_env, guide, "INTERNAL", guide["vpc"]["vpc_id"], guide["subnet"]["subnet_id"])
    operators = clb.ensure_tcp_listener.fn(region, lb_id, 8443, "operator", HealthCheckSpec(check_type="TCP"), "/", 20)
    before = inventory(cloud_env)
    session = guide["session_server"]["instance_id"]
    # what a killed run did to the operator's CLB: a listener of its own, and a binding on the operator's listener
    clb.ensure_tcp_listener.fn(region, lb_id, port, clb.listener_name(KILLED, "session"), HealthCheckSpec(),
                               "/mina_auth/", 20)  # fmt: skip
    pairs = clb.targets_on([session], 8443)
    binding = Binding(region=region, load_balancer_id=lb_id, listener_id=operators.listener_id, targets=pairs)
    remember_binding(KILLED, binding)
    clb.register_targets.fn(region, lb_id, operators.listener_id, pairs, 20)
    assert inventory(cloud_env) != before

    removed = cleanup(guide)

    assert removed.listeners == [f"{lb_id}/{clb.listener_name(KILLED, 'session')}"]
    assert removed.targets_unbound == [f"{lb_id}/{operators.listener_id}: {session}:8443"]
    assert inventory(cloud_env) == before


def test_an_unreachable_server_does_not_stop_the_cleanup(guide, cloud_env: EmbeddedSandbox):
    left = leave_what_a_killed_run_leaves(guide, KILLED)
    cloud_env.admin("POST", "faults", {"service": "ssh", "action": f"{left['business']}/sftp"})

    with pytest.raises(RuntimeError, match=left["business"]) as failed:
        cleanup(guide)

    assert "could not be undone" in str(failed.value)
    after = inventory(cloud_env)
    assert left["load_balancer"] not in after["load_balancers"]
    assert not set(left["instances"]) & set(after["instances"]) and left["image"] not in after["images"]


def test_cleanup_never_overwrites_a_later_edit_of_sdk_config(guide, cloud_env: EmbeddedSandbox):
    """An operator edited the file after the killed run: their edit is not the run's to undo; it is reported."""
    left = leave_what_a_killed_run_leaves(guide, KILLED)
    path = Path(servers(cloud_env)[left["business"]]["disk"]) / SDK_CONFIG
    edited = path.read_bytes() + b"\n"
    path.write_bytes(edited)

    with pytest.raises(RuntimeError, match="changed since tcscale rewrote it"):
        cleanup(guide)

    assert path.read_bytes() == edited
    assert left["load_balancer"] not in inventory(cloud_env)["load_balancers"]


HAND_EDITED = "http://10.0.9.9/mina_auth/"  # where an operator repointed the business server after the killed run


def edit_auth_server_url_by_hand(guide: dict[str, Any], value: str) -> tuple[Server, bytes, str]:
    """What an operator does over SSH: authServerUrl set to `value` in sdk.config, nothing else touched.
    Returns the server, the file as edited, and the killed run's backup of it."""
    (server,) = select_servers(guide["region"], BUSINESS_TAG)
    profile = runtime_profile("node-pm2")
    with remote.session(server.private_ip, ssh_settings(guide), profile, server.instance_id) as conn:
        path = remote.sftp_path(profile.config_path)
        data = remote.read_file(conn, path)
        current = sdkconfig.get_string(data, AUTH_KEY, path)
        edited = data.replace(f'"{current}"'.encode(), f'"{value}"'.encode())
        assert edited != data
        with conn.sftp().open(path, "wb") as file:
            file.write(edited)
        (backup,) = config_rewrite.backups(conn, profile.config_path, KILLED)
    return server, edited, backup


def test_cleanup_leaves_a_later_hand_edit_of_auth_server_url_and_reports_it(guide, cloud_env: EmbeddedSandbox):
    """authServerUrl repointed by hand after the killed run: not the value the run wrote, so not the run's to undo;
    the report names the server, the value it holds and the run's backup, with the fix."""
    left = leave_what_a_killed_run_leaves(guide, KILLED)
    server, edited, backup = edit_auth_server_url_by_hand(guide, HAND_EDITED)
    path = Path(servers(cloud_env)[left["business"]]["disk"]) / SDK_CONFIG

    removed = cleanup(guide)

    assert path.read_bytes() == edited, "cleanup-run put the run's backup over the operator's edit"
    assert not removed.configs_restored
    (kept,) = removed.configs_left
    assert server.instance_id in kept.what and HAND_EDITED in kept.detail and backup in kept.detail
    assert backup in kept.fix
    report = removed.markdown()
    assert server.instance_id in report and HAND_EDITED in report and backup in report
    assert left["load_balancer"] not in inventory(cloud_env)["load_balancers"]  # the rest was still undone


def test_the_runs_own_undo_leaves_a_later_hand_edit_of_auth_server_url(guide, cloud_env: EmbeddedSandbox):
    """The flow's undo of a repoint (`restore_run_backup`) follows the same rule: it restores only over the value
    its run wrote, and otherwise fails naming the server, the value and the backup."""
    leave_what_a_killed_run_leaves(guide, KILLED)
    server, edited, backup = edit_auth_server_url_by_hand(guide, HAND_EDITED)
    path = Path(servers(cloud_env)[server.instance_id]["disk"]) / SDK_CONFIG
    profile, ssh = runtime_profile("node-pm2"), ssh_settings(guide)

    with pytest.raises(remote.RemoteError) as refused:
        restore_run_backup.fn(server, ssh, profile, health_check(guide), KILLED, 20)

    assert HAND_EDITED in str(refused.value) and backup in str(refused.value)
    assert path.read_bytes() == edited
