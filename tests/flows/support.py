"""Helpers of the flow tests: parameters for the seeded guide, and what "nothing left behind" means.

`inventory` is the sandbox's state (`GET /_sandbox/state`) reduced to what a run may create or
change: instance, image and CLB ids (with listeners and targets), and every security group's
policies. `business_configs` reads each business server's sdk.config from its disk, byte for byte.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tencentcloud.cvm.v20170312 import models as cvm_models
from tencentcloud.cvm.v20170312.cvm_client import CvmClient

from devstack.demo import seed_parameters
from flows.parameters import (
    BusinessTierParameters,
    ClusterParameters,
    ServerSelector,
    SessionTierParameters,
    Timeouts,
)
from sandbox.dataplane.guests import MAX_RESTARTS
from sandbox.server import EmbeddedSandbox
from tasks.models import SshSettings
from tasks.waiters import wait_until
from tests.sdk import sdk_client

SDK_CONFIG = "etc/qcloud/sdk.config"
SHORT = Timeouts(image=20, launch=20, clb=20, health=15, undo=60, poll=0.3)
# How long a restarted app must stay up in the flow tests (the product's default is 3 s). The sandbox's crash loop
# restarts a failing app every 0.1 s (sandbox/dataplane/guests.py CRASH_DELAY), so 0.5 s still sees one; the rule
# itself (a process that dies inside the window fails the restart) is proved in tests/tasks/test_apps.py with 1 s.
SETTLE = 0.5
BUSINESS_TAG = ServerSelector(tag_key="tcscale:tier", tag_value="business")


def cluster_params(guide: dict[str, Any], timeouts: Timeouts = SHORT, count: int = 2) -> ClusterParameters:
    """The demo's parameters for the seeded guide, with the tests' short timeouts."""
    ssh = {"connect_timeout": 5, "command_timeout": 20, "io_timeout": 10}
    cluster = seed_parameters(guide, count, timeouts, ssh)
    for tier in (cluster.session, cluster.business):
        tier.health = tier.health.model_copy(update={"timeout_seconds": 2, "settle_seconds": SETTLE})
    return cluster


def ssh_settings(guide: dict[str, Any], **extra: Any) -> SshSettings:
    return cluster_params(guide).session.ssh.model_copy(update=extra)


def session_params(guide: dict[str, Any], timeouts: Timeouts = SHORT, **extra: Any) -> SessionTierParameters:
    """The session tier of the guide; business servers found by tag (every RUNNING business server)."""
    extra.setdefault("business_servers", BUSINESS_TAG)
    base = cluster_params(guide, timeouts).session.model_dump(exclude={"ssh"})
    return SessionTierParameters.model_validate({**base, "ssh": ssh_settings(guide), **extra})


def business_params(guide: dict[str, Any], timeouts: Timeouts = SHORT, **extra: Any) -> BusinessTierParameters:
    base = cluster_params(guide, timeouts).business.model_dump(exclude={"ssh"})
    return BusinessTierParameters.model_validate({**base, "ssh": ssh_settings(guide), **extra})


# --- what the sandbox holds --------------------------------------------------------------------------


def _policies(group: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A group's rules without their timestamps (which tick)."""
    return {
        direction: [{k: v for k, v in rule.items() if k != "modify_time"} for rule in group[direction]]
        for direction in ("ingress", "egress")
    }


def _load_balancer(lb: dict[str, Any]) -> dict[str, Any]:
    listeners = lb.get("listeners") or {}
    return {
        listener_id: sorted(f"{t['instance_id']}:{t['port']}" for t in listener.get("targets") or [])
        for listener_id, listener in listeners.items()
    }


def inventory(sandbox: EmbeddedSandbox) -> dict[str, Any]:
    """What a run can create or change, once every boot and shutdown has finished."""
    sandbox.admin("POST", "servers/settle")
    services = sandbox.admin("GET", "state")["services"]
    cvm, clb, vpc = services["cvm"], services["clb"], services["vpc"]
    return {
        "instances": sorted(i for i, item in cvm["instances"].items() if item["state"] != "TERMINATED"),
        "images": sorted(cvm["images"]),
        "load_balancers": {i: _load_balancer(lb) for i, lb in clb["load_balancers"].items()},
        "security_groups": {i: _policies(group) for i, group in vpc["security_groups"].items()},
    }


def servers(sandbox: EmbeddedSandbox) -> dict[str, dict[str, Any]]:
    return {s["instance_id"]: s for s in sandbox.admin("GET", "servers")["servers"]}


def business_server_ids(sandbox: EmbeddedSandbox) -> list[str]:
    instances = sandbox.admin("GET", "state")["services"]["cvm"]["instances"]
    return sorted(
        i
        for i, item in instances.items()
        if item["tags"].get("tcscale:tier") == "business" and item["state"] == "RUNNING"
    )


def business_configs(sandbox: EmbeddedSandbox) -> dict[str, bytes | None]:
    """{instance id: sdk.config bytes (None: no such file)} of every RUNNING business server, read from its disk."""
    known = servers(sandbox)
    configs: dict[str, bytes | None] = {}
    for instance_id in business_server_ids(sandbox):
        path = Path(known[instance_id]["disk"]) / SDK_CONFIG
        configs[instance_id] = path.read_bytes() if path.exists() else None
    return configs


def guest_status(sandbox: EmbeddedSandbox, instance_id: str) -> dict[str, Any]:
    """The business app of one server as the sandbox's admin API shows it: state, restarts, the config it loaded.

    Tests only: the product never reads this (no real cloud has it); it proves what the product's checks claim.
    """
    (server,) = [s for s in sandbox.admin("GET", "guests")["servers"] if s["instance_id"] == instance_id]
    (app,) = [a for a in server["apps"].values() if a["kind"] == "weapp"]
    return app


def assert_business_untouched(sandbox: EmbeddedSandbox, configs: dict[str, bytes | None], auth_url: str) -> None:
    """Every business server's sdk.config is byte-identical, its app running with the original authServerUrl."""
    assert business_configs(sandbox) == configs
    for instance_id in configs:
        app = guest_status(sandbox, instance_id)
        assert app["state"] == "online", (instance_id, app)
        assert app["loaded"].get("authServerUrl") == auth_url, (instance_id, app)


def canary_first(region: str) -> list[str]:
    """The business servers in the order the flow takes them: the first is its canary."""
    from flows.scale_out_steps.preflight import select_servers

    return [server.instance_id for server in select_servers(region, BUSINESS_TAG)]


def restart_fails(instance_id: str) -> dict[str, Any]:
    """The node app crashes at its next restart on this server, and at each of pm2's automatic restarts until pm2
    gives up ("errored"); a restart after that (once the config is put back) works."""
    action = f"{instance_id}/weapp.restart"
    return {"service": "guest", "action": action, "error_message": "pm2: app crashed", "count": 1 + MAX_RESTARTS}


def restart_slow(instance_id: str, milliseconds: int) -> dict[str, Any]:
    """The node app's next restart on this server takes that long (then succeeds)."""
    return {"service": "guest", "action": f"{instance_id}/weapp.restart", "latency_ms": milliseconds, "count": 1}


# --- more business servers, made as an operator would (image + launch through the SDK) ---------------------


def add_business_servers(sandbox: EmbeddedSandbox, guide: dict[str, Any], count: int) -> list[str]:
    """Launch `count` more business servers from an image of the guide's one; wait until their app is up."""
    cvm = sdk_client(sandbox, CvmClient, guide["region"])
    source = guide["business_server"]
    create = cvm_models.CreateImageRequest()
    create.from_json_string(json.dumps({"InstanceId": source["instance_id"], "ImageName": "operator-business"}))
    image_id = cvm.CreateImage(create).ImageId
    describe = cvm_models.DescribeImagesRequest()
    describe.ImageIds = [image_id]
    wait_until(
        lambda: cvm.DescribeImages(describe).ImageSet[0].ImageState,
        done=lambda state: state == "NORMAL",
        failed=lambda state: state if state == "CREATEFAILED" else None,
        what="the operator's business image",
        timeout=20,
        first_delay=0.05,
        max_delay=0.3,
    )
    run = cvm_models.RunInstancesRequest()
    run.from_json_string(
        json.dumps(
            {
                "Placement": {"Zone": guide["zone"], "ProjectId": guide["project_id"]},
                "ImageId": image_id,
                "InstanceType": "S5.SMALL2",
                "InstanceCount": count,
                "VirtualPrivateCloud": {"VpcId": guide["vpc"]["vpc_id"], "SubnetId": guide["subnet"]["subnet_id"]},
                "SecurityGroupIds": source["security_group_ids"],
                "LoginSettings": {"KeyIds": [guide["key_pair"]["key_id"]]},
                "InternetAccessible": {"InternetMaxBandwidthOut": 1},
                "TagSpecification": [
                    {"ResourceType": "instance", "Tags": [{"Key": "tcscale:tier", "Value": "business"}]}
                ],
            }
        )
    )
    ids = list(cvm.RunInstances(run).InstanceIdSet)
    sandbox.admin("POST", "servers/settle")
    for instance_id in ids:
        wait_until(
            lambda instance_id=instance_id: guest_status(sandbox, instance_id)["state"],
            done=lambda state: state == "online",
            failed=lambda _: None,
            what=f"business server {instance_id}'s app",
            timeout=20,
            first_delay=0.05,
            max_delay=0.3,
        )
    refresh_known_hosts(sandbox, guide)
    return ids


def refresh_known_hosts(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> None:
    """The host keys of every server now running (as an operator's known_hosts would list them)."""
    guide["known_hosts"] = [line for s in servers(sandbox).values() for line in s["known_hosts"]]


def wait_for_a_fault_to_fire(
    sandbox: EmbeddedSandbox, process: subprocess.Popen[bytes], what: str, rule_id: str | None = None
) -> None:
    """Until one of the sandbox's faults (or rule `rule_id`) has fired in the run `process` runs (fails at once if the
    run ended)."""
    wait_until(
        lambda: [r for r in sandbox.admin("GET", "faults") if r["fired"] and rule_id in (None, r["id"])],
        done=bool,
        failed=lambda _: None if process.poll() is None else f"the run ended early ({process.returncode})",
        what=what,
        timeout=120,
        first_delay=0.2,
        max_delay=0.5,
    )
