"""The scale-out flows end to end: real Prefect engine, real SDK, real SSH, real TCP, against the sandbox.

What the product claims (its report) is checked against what the sandbox knows (the config each app loaded),
and the product's own checks are the real apps' routes only.
"""

import httpx
import pytest
from prefect.artifacts import Artifact

from flows.scale_out import scale_out_cluster, scale_out_session_tier
from tasks.cvm import describe_servers
from tasks.health import WX_SESSION_MAGIC_ID, auth_url
from tasks.models import HostKeyPolicy
from tests.flows.support import cluster_params, guest_status


def report_of(key: str) -> str:
    artifact = Artifact.get(key)
    assert artifact is not None, key
    return str(artifact.data)


def test_scale_out_session_tier(guide, cloud_env):
    params = cluster_params(guide).session
    outcome = scale_out_session_tier(params)

    assert len(outcome.new_instance_ids) == 2 and len(outcome.bound) == 3
    source, *new = describe_servers(params.region, [guide["session_server"]["instance_id"], *outcome.new_instance_ids])
    for server in new:  # placed, networked and logged in exactly like the source
        assert server.internet_accessible == source.internet_accessible and server.key_ids == source.key_ids
        assert (server.zone, server.project_id, server.subnet_id) == (source.zone, source.project_id, source.subnet_id)
    expected = auth_url(outcome.vip or "", params.load_balancer.listener_port)
    (change,) = outcome.changes
    assert change.applied and change.after == expected and change.before == guide["auth_server_url"]
    app = guest_status(cloud_env, guide["business_server"]["instance_id"])
    assert app["state"] == "online" and app["loaded"]["authServerUrl"] == expected
    report = report_of(f"scale-out-session-tier-{outcome.run_key}")
    assert "| canary: repoint" in report and "PRIVATE KEY" not in report
    for instance_id in outcome.bound:  # evidence that names each backend
        assert f"| {instance_id} behind {outcome.load_balancer_id}/{outcome.listener_id} | ok |" in report
    assert "restarted after the edit | ok | node-pm2: process" in report
    assert "reaches" in report and "60012" in report  # the session service's verdict, through the new VIP


@pytest.mark.parametrize("policy", ["strict", "tofu"])
def test_scale_out_cluster(guide, cloud_env, policy):
    # strict: the session tier first, then the business server imaged with the new URL. tofu: the business tier
    # beside the session tier (the run can SSH into the servers it launches), its new servers repointed to the VIP
    # before they are bound
    params = cluster_params(guide)
    params.business.ssh = params.business.ssh.model_copy(update={"host_key_policy": HostKeyPolicy(policy)})
    session, business = scale_out_cluster(params)
    assert len(business.bound) == 3
    # beside: the business tier repointed its new servers itself (a no-op change when its image was taken after
    # the session tier had repointed the imaged server: both orders are right)
    repointed = {c.instance_id for c in business.changes if c.key == "authServerUrl"}
    assert repointed == (set(business.new_instance_ids) if policy == "tofu" else set())
    port = params.business.load_balancer.listener_port
    login = httpx.get(f"http://{business.vip}:{port}/login", timeout=10)
    assert login.status_code == 200 and WX_SESSION_MAGIC_ID in login.text
    for instance_id in business.bound:  # every business server, old and new, loaded the session tier's VIP
        loaded = guest_status(cloud_env, instance_id)["loaded"]["authServerUrl"]
        assert loaded.startswith(f"http://{session.vip}")
