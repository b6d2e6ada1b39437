"""`status` and the dangerous-`set` rule read the live cloud (the sandbox) with the product's tasks functions."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from devstack.prefect_server import PrefectServer
from sandbox.server import EmbeddedSandbox
from tasks.cloud import call_json, clients_for
from tasks.cvm import describe_servers
from tests.chatops.support import Bridge, ensure_deployments, flow_runs, settings_for


@pytest.fixture
def guide_with_group(cloud_env: EmbeddedSandbox, prefect_server: PrefectServer, tmp_path: Path) -> dict[str, Any]:
    """The guide's starting point, and a scaling group tcscale-session with desired capacity 2."""
    ensure_deployments(prefect_server)
    seed = cloud_env.admin("POST", "seed", {"key_file": str(tmp_path / "guide.pem")})
    region = seed["region"]
    (source,) = describe_servers(region, [seed["session_server"]["instance_id"]])
    scaling = clients_for(region).autoscaling
    config = call_json(scaling, "CreateLaunchConfiguration", {
        "LaunchConfigurationName": "chatops-test", "ImageId": source.image_id, "InstanceType": source.instance_type,
    })  # fmt: skip
    call_json(scaling, "CreateAutoScalingGroup", {
        "AutoScalingGroupName": "tcscale-session", "LaunchConfigurationId": config["LaunchConfigurationId"],
        "MinSize": 0, "MaxSize": 4, "DesiredCapacity": 2, "VpcId": source.vpc_id, "SubnetIds": [source.subnet_id],
    })  # fmt: skip
    return seed


def test_status_shows_both_tiers_and_dangerous_set_follows_the_live_group(
    guide_with_group: dict[str, Any], prefect_server: PrefectServer, tmp_path: Path
) -> None:
    seed = guide_with_group
    with Bridge(prefect_server, settings_for(tmp_path, region=seed["region"])) as bridge:
        before = len(flow_runs(prefect_server, tags=["chat"]))
        status = bridge.say("status", uuid.uuid4().hex).json()
        text = status["text"]
        assert "run_id" not in status
        assert f"session tier ({seed['region']})" in text and f"business tier ({seed['region']})" in text
        assert seed["session_server"]["instance_id"] in text and seed["business_server"]["instance_id"] in text
        assert "scaling group asg-" in text and "desired 2 in [0, 4]" in text
        assert "scaling group tcscale-business: none" in text
        assert "last runs:" in text
        assert len(flow_runs(prefect_server, tags=["chat"])) == before  # status runs nothing

        for lowering in ("set session 1", "set session -1"):
            reply = bridge.say(lowering, uuid.uuid4().hex).json()
            assert "below its current 2 servers" in reply["text"] and "run_id" not in reply
        assert len(flow_runs(prefect_server, tags=["chat"])) == before
        for raising in ("set session 3", "set session +1", "set session 2"):
            reply = bridge.say(raising, uuid.uuid4().hex).json()
            assert reply.get("run_id"), (raising, reply)
