"""Undo that holds when steps run in parallel, when an undo itself fails, and when the process is signalled.

Checked through the sandbox itself: its resources (`inventory`), each business server's sdk.config byte for
byte, and the config each business app loaded, as the sandbox's admin API shows them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from prefect.artifacts import Artifact
from prefect.settings import PREFECT_API_URL
from tencentcloud.clb.v20180317.clb_client import ClbClient

from flows.cleanup_run import cleanup_run
from flows.parameters import CleanupParameters, LoadBalancerOptions
from flows.scale_out import scale_out_session_tier
from sandbox.server import EmbeddedSandbox
from tasks import clb
from tasks.clb import HealthCheckSpec
from tests.flows.support import (
    BUSINESS_TAG,
    add_business_servers,
    assert_business_untouched,
    business_configs,
    canary_first,
    inventory,
    restart_fails,
    restart_slow,
    session_params,
    ssh_settings,
    wait_for_a_fault_to_fire,
)
from tests.flows.test_preflight import create_load_balancer
from tests.sdk import sdk_client


def report_of(run_key: str) -> str:
    artifact = Artifact.get(f"scale-out-session-tier-{run_key}")
    assert artifact is not None
    return str(artifact.data)


def test_one_of_five_fails_its_restart_while_four_are_slow(guide: dict[str, Any], cloud_env: EmbeddedSandbox):
    """Nothing is undone until every parallel repoint has finished; then all five are restored and restarted,
    and the CLB goes only after: no server is left pointing at a deleted VIP."""
    sandbox = cloud_env
    add_business_servers(sandbox, guide, 4)
    canary, *rest = canary_first(guide["region"])
    failing, slow = rest[1], [i for i in rest if i != rest[1]]
    before, configs = inventory(sandbox), business_configs(sandbox)
    for instance_id in slow:
        sandbox.admin("POST", "faults", restart_slow(instance_id, 1500))
    sandbox.admin("POST", "faults", restart_fails(failing))

    with pytest.raises(Exception, match="weapp did not restart") as failed:
        scale_out_session_tier(session_params(guide, run_key="parallel-1"))

    assert failing in str(failed.value)
    assert inventory(sandbox) == before, "the undo left something behind (or took something away)"
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])
    report = report_of("parallel-1")
    undone = report[report.index("## Undone") :]
    for instance_id in [canary, *rest]:
        assert f"sdk.config of business server {instance_id} | undone" in undone, instance_id
    # newest first: every config is put back before the CLB that the configs pointed at is deleted
    assert undone.index("sdk.config of business server") < undone.index("INTERNAL load balancer of this run")


def test_an_undo_that_fails_is_reported_with_its_fix(guide: dict[str, Any], cloud_env: EmbeddedSandbox):
    sandbox = cloud_env
    before, configs = inventory(sandbox), business_configs(sandbox)
    sandbox.admin("POST", "faults", restart_fails(guide["business_server"]["instance_id"]))
    sandbox.admin("POST", "faults", {"service": "clb", "action": "DeleteLoadBalancer", "error_code": "InternalError"})

    with pytest.raises(Exception, match="weapp did not restart") as failed:
        scale_out_session_tier(session_params(guide, run_key="undo-fails-1"))

    notes = "\n".join(getattr(failed.value, "__notes__", []))
    assert "undo incomplete" in notes and "tcscale:run=undo-fails-1" in notes
    report = report_of("undo-fails-1")
    assert "could not be undone, fix them by hand" in report
    assert "| INTERNAL load balancer of this run | FAILED |" in report and "InternalError" in report
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])  # the rest was still undone
    left = inventory(sandbox)
    assert len(left["load_balancers"]) == len(before["load_balancers"]) + 1

    sandbox.admin("DELETE", "faults")  # the operator follows the fix: cleanup-run with the run key
    cleanup_run(CleanupParameters(run_key="undo-fails-1", region=guide["region"], business_servers=BUSINESS_TAG,
                                  ssh=ssh_settings(guide), timeout=20))  # fmt: skip
    assert inventory(sandbox) == before


def test_an_undo_on_the_operators_clb_removes_only_the_pairs_its_run_bound(
    guide: dict[str, Any], cloud_env: EmbeddedSandbox
):
    """The operator's CLB already sends to the session server on 80 (the backend port) and on 8080: the run binds
    only the pairs it lacks (the new servers on 80) and, once its restart fails, unbinds exactly those."""
    sandbox, region = cloud_env, guide["region"]
    session, port = guide["session_server"]["instance_id"], guide["ports"]["session"]
    lb_id = create_load_balancer(sandbox, guide, "INTERNAL", guide["vpc"]["vpc_id"], guide["subnet"]["subnet_id"])
    listener_port = guide["ports"]["map"]["80"]
    listener = clb.ensure_tcp_listener.fn(
        region, lb_id, listener_port, "operator", HealthCheckSpec(), "/mina_auth/", 20
    )
    operators = [{"InstanceId": session, "Port": port}, {"InstanceId": session, "Port": 8080}]
    request = {"LoadBalancerId": lb_id, "ListenerId": listener.listener_id, "Targets": operators}
    answer = sdk_client(sandbox, ClbClient, region).call_json("RegisterTargets", request)["Response"]
    clb.wait_clb_task(region, 20, task_id=answer["RequestId"])
    before, configs = inventory(sandbox), business_configs(sandbox)
    assert before["load_balancers"][lb_id][listener.listener_id] == [f"{session}:{port}", f"{session}:8080"]
    sandbox.admin("POST", "faults", restart_fails(guide["business_server"]["instance_id"]))
    options = LoadBalancerOptions(load_balancer_id=lb_id, listener_port=listener_port)

    with pytest.raises(Exception) as failed:
        scale_out_session_tier(session_params(guide, run_key="two-ports-1", load_balancer=options))

    after = inventory(sandbox)
    assert after["load_balancers"][lb_id] == before["load_balancers"][lb_id], "the undo unbound the operator's pairs"
    assert after == before, "the undo left something behind (or took something away)"
    assert "weapp did not restart" in str(failed.value), "the run failed before its fault (at binding)"
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])
    assert f"2 server(s) bound to {lb_id}/{listener.listener_id} | undone" in report_of("two-ports-1")


RUN_IN_A_PROCESS = """
import json, sys
from flows.parameters import SessionTierParameters
from flows.scale_out import scale_out_session_tier
scale_out_session_tier(SessionTierParameters.model_validate_json(sys.argv[1]))
"""


def test_a_signalled_run_undoes_while_its_process_lives(guide: dict[str, Any], cloud_env: EmbeddedSandbox):
    """SIGTERM (what a worker sends when the run is cancelled from the UI) mid-repoint: the run undoes itself."""
    sandbox = cloud_env
    business = guide["business_server"]["instance_id"]
    before, configs = inventory(sandbox), business_configs(sandbox)
    sandbox.admin("POST", "faults", restart_slow(business, 6_000))
    params = session_params(guide, run_key="signalled-1")
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}  # the test harness's server
    process = subprocess.Popen([sys.executable, "-c", RUN_IN_A_PROCESS, params.model_dump_json()], env=env)
    try:
        wait_for_a_fault_to_fire(sandbox, process, "the canary's restart to begin")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) != 0
    finally:
        if process.poll() is None:
            process.kill()
    assert inventory(sandbox) == before
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])
    assert "## Undone" in report_of("signalled-1")  # the signalled run wrote what it undid
