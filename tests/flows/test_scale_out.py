"""The scale-out flows end to end: real Prefect engine, real SDK, real SSH, real TCP, against the sandbox."""

import httpx
from prefect.client.orchestration import get_client

from flows.scale_out import scale_out_cluster, scale_out_session_tier
from tests.flows.support import cluster_params


def test_scale_out_session_tier(guide, cloud_env):
    outcome = scale_out_session_tier(cluster_params(guide).session)

    assert len(outcome.new_instance_ids) == 2 and len(outcome.bound) == 3
    port = guide["ports"]["app"]
    expected = f"http://{outcome.vip}{'' if port == 80 else f':{port}'}/mina_auth/"
    (change,) = outcome.changes
    assert change.applied and change.after == expected and change.before == guide["auth_server_url"]
    health = httpx.get(f"http://{guide['business_server']['private_ip']}:{port}/health").json()
    assert health["status"] == "up" and health["authServerUrl"] == expected
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    report = next(a for a in artifacts if a.key == f"scale-out-session-tier-{outcome.run_key}")
    assert "| canary: repoint" in report.data and "PRIVATE KEY" not in report.data


def test_scale_out_cluster(guide, cloud_env):
    session, business = scale_out_cluster(cluster_params(guide))
    assert len(business.bound) == 3
    port = guide["ports"]["app"]
    health = httpx.get(f"http://{business.vip}:{port}/health").json()
    assert health["status"] == "up" and health["authServerUrl"].startswith(f"http://{session.vip}")
