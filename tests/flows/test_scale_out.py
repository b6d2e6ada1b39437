"""The scale-out flows end to end: real Prefect engine, real SDK, real SSH, real TCP, against the sandbox."""

from typing import Any

import httpx
from prefect.client.orchestration import get_client

from flows.parameters import (
    BusinessTierParameters,
    ClusterParameters,
    LoadBalancerOptions,
    ServerSelector,
    SessionTierParameters,
    Timeouts,
)
from flows.scale_out import scale_out_cluster, scale_out_session_tier
from tasks.health import HealthCheck
from tasks.models import SshSettings


def tier_params(guide: dict[str, Any], **extra: Any) -> dict[str, Any]:
    port = guide["ports"]["app"]
    return {
        "region": guide["region"],
        "count": 2,
        "load_balancer": LoadBalancerOptions(listener_port=port, backend_port=port),
        "health": HealthCheck(port=port),
        "ssh": SshSettings(
            port=guide["ports"]["ssh"], key_file=guide["key_pair"]["private_key_file"], known_hosts=guide["known_hosts"]
        ),
        "timeouts": Timeouts(image=30, launch=30, clb=30, health=30, poll=0.5),
        **extra,
    }


def session_params(guide: dict[str, Any], **extra: Any) -> SessionTierParameters:
    source = ServerSelector(instance_ids=[guide["session_server"]["instance_id"]])
    business = ServerSelector(instance_ids=[guide["business_server"]["instance_id"]])
    return SessionTierParameters(source=source, business_servers=business, **tier_params(guide, **extra))


def business_params(guide: dict[str, Any], **extra: Any) -> BusinessTierParameters:
    source = ServerSelector(instance_ids=[guide["business_server"]["instance_id"]])
    return BusinessTierParameters(source=source, **tier_params(guide, **extra))


def test_scale_out_session_tier(guide, cloud_env):
    outcome = scale_out_session_tier(session_params(guide))

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
    session, business = scale_out_cluster(
        ClusterParameters(session=session_params(guide), business=business_params(guide))
    )
    assert len(business.bound) == 3
    port = guide["ports"]["app"]
    health = httpx.get(f"http://{business.vip}:{port}/health").json()
    assert health["status"] == "up" and health["authServerUrl"].startswith(f"http://{session.vip}")
