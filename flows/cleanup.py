"""`cleanup-run`: remove everything one run created, for runs killed before their rollback could run.

A run marks what it makes: instances, images and CLBs carry the tag `tcscale:run=<key>`, security
group rules say `tcscale:<key>` in their description, and each sdk.config it rewrote has a backup
named after it. This flow finds them by those marks alone, so it needs nothing from the dead run.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from flows.parameters import CleanupParameters
from flows.preflight import select_servers
from tasks import clb, cvm, remote, vpc
from tasks.cloud import call_json, clients_for
from tasks.repoint import AUTH_KEY
from tasks.waiters import wait_until


class Removed(BaseModel):
    run_key: str
    dry_run: bool
    configs_restored: list[str] = Field(default_factory=list, description="instance ids")
    rules_revoked: list[str] = Field(default_factory=list, description="sg-id: rule")
    load_balancers: list[str] = Field(default_factory=list)
    instances: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)

    def markdown(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        rows = [
            ("sdk.config restored", self.configs_restored),
            ("security group rules revoked", self.rules_revoked),
            ("load balancers deleted", self.load_balancers),
            ("instances terminated", self.instances),
            ("images deleted", self.images),
        ]
        lines = [f"# cleanup-run {self.run_key}: {verb}", "", "| what | ids |", "|---|---|"]
        lines += [f"| {what} | {', '.join(ids) or '-'} |" for what, ids in rows]
        return "\n".join(lines) + "\n"


@task(name="restore-configs", cache_policy=NO_CACHE)
def restore_configs(params: CleanupParameters, dry_run: bool) -> list[str]:
    """Business servers whose sdk.config this run rewrote: back to the oldest backup of the run (the original)."""
    profile = params.runtime_profile()
    restored = []
    for server in select_servers(params.region, params.business_servers):
        if server.state != "RUNNING":
            continue
        with remote.session(server.private_ip, params.ssh, profile, server.instance_id) as conn:
            found = remote.backups(conn, profile.config_path, params.run_key, params.ssh.io_timeout)
            if not found:
                continue
            original = remote.read_file(conn, found[0], params.ssh.io_timeout)
            current = remote.read_file(conn, remote.sftp_path(profile.config_path), params.ssh.io_timeout)
            if original == current:
                continue
            restored.append(server.instance_id)
            if not dry_run:
                remote.restore_from_backup(conn, profile.config_path, found[0], params.ssh.io_timeout)
                remote.restart(conn, profile, params.ssh.command_timeout)
                get_run_logger().info("%s: %s restored (%s back)", server.instance_id, profile.config_path, AUTH_KEY)
    return restored


@task(name="terminate-tagged-servers", cache_policy=NO_CACHE)
def terminate_tagged(region: str, tags: dict[str, str], timeout: float, dry_run: bool) -> list[str]:
    ids = [s.instance_id for s in cvm.describe_servers(region, filters=cvm.tag_filters(tags))]
    if ids and not dry_run:
        cvm.terminate_servers.fn(region, ids)
        wait_until(
            lambda: cvm.describe_servers(region, ids),
            done=lambda left: all(s.state in ("TERMINATING", "SHUTDOWN") for s in left),
            failed=lambda _: None,
            what=f"{len(ids)} server(s) to terminate",
            timeout=timeout,
            first_delay=0.2,
            max_delay=5,
        )
    return ids


def tagged_images(region: str, tags: dict[str, str]) -> list[str]:
    filters = [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}, *cvm.tag_filters(tags)]
    return [
        i["ImageId"] for i in call_json(clients_for(region).cvm, "DescribeImages", {"Filters": filters})["ImageSet"]
    ]


@flow(name="cleanup-run", description="remove everything a scale-out run created, found by its tags")
def cleanup_run(params: CleanupParameters) -> Removed:
    region, tags = params.region, {"tcscale:run": params.run_key}
    removed = Removed(run_key=params.run_key, dry_run=params.dry_run)
    # Business servers first: they must stop using the VIP before the CLB goes.
    if params.restore_configs:
        removed.configs_restored = restore_configs(params, params.dry_run)
    for rule in vpc.rules_described(region, f"tcscale:{params.run_key}"):
        removed.rules_revoked.append(f"{rule.security_group_id}: {rule.protocol} {rule.port} from {rule.cidr_block}")
        if not params.dry_run:
            vpc.revoke(region, rule)
    for balancer in clb.find_load_balancers_by_tags(region, tags):
        removed.load_balancers.append(balancer.load_balancer_id)
        if not params.dry_run:
            clb.delete_load_balancer(region, balancer.load_balancer_id, params.timeout)
    removed.instances = terminate_tagged(region, tags, params.timeout, params.dry_run)
    for image_id in tagged_images(region, tags):
        removed.images.append(image_id)
        if not params.dry_run:
            cvm.delete_image(region, image_id)
    create_markdown_artifact(removed.markdown(), key=f"cleanup-run-{params.run_key}", description="cleanup-run report")
    return removed
