"""Re-runs and repeat scale-outs: a run adopts what its own earlier attempt made (answers lost included), the
cluster's two tiers share one run key, and scaling out a tier that already is a cluster reuses its CLB."""

from __future__ import annotations

from typing import Any

import pytest
from tencentcloud.clb.v20180317.clb_client import ClbClient

from flows.cleanup_run import cleanup_run
from flows.parameters import CleanupParameters, LoadBalancerOptions, ServerSelector
from flows.scale_out import scale_out_business_tier, scale_out_cluster, scale_out_session_tier
from sandbox.server import EmbeddedSandbox
from tests.flows.support import (
    BUSINESS_TAG,
    assert_business_untouched,
    business_configs,
    business_params,
    cluster_params,
    guest_status,
    inventory,
    refresh_known_hosts,
    restart_fails,
    session_params,
    ssh_settings,
)
from tests.flows.test_preflight import create_load_balancer
from tests.sdk import sdk_client

SESSION_TAG = ServerSelector(tag_key="tcscale:tier", tag_value="session")


def cleanup(sandbox: EmbeddedSandbox, guide: dict[str, Any], key: str) -> Any:
    refresh_known_hosts(sandbox, guide)
    params = CleanupParameters(
        run_key=key, region=guide["region"], business_servers=BUSINESS_TAG, ssh=ssh_settings(guide), timeout=20
    )
    return cleanup_run(params)


def test_lost_answers_are_still_recognised_as_the_runs_own(guide: dict[str, Any], cloud_env: EmbeddedSandbox):
    """The rule, the listener and the targets were made, their answers lost: the retries adopt them as this run's,
    so the undo (the canary's restart fails) removes them from the operator's own CLB, which stays."""
    sandbox = cloud_env
    lb_id = create_load_balancer(sandbox, guide, "INTERNAL", guide["vpc"]["vpc_id"], guide["subnet"]["subnet_id"])
    before, configs = inventory(sandbox), business_configs(sandbox)
    for action in ("CreateSecurityGroupPolicies", "CreateListener", "RegisterTargets"):
        service = "vpc" if action == "CreateSecurityGroupPolicies" else "clb"
        sandbox.admin("POST", "faults", {"service": service, "action": action, "lose_answer": True, "count": 1})
    sandbox.admin("POST", "faults", restart_fails(guide["business_server"]["instance_id"]))
    options = LoadBalancerOptions(load_balancer_id=lb_id, listener_port=guide["ports"]["app"])
    params = session_params(guide, run_key="lost-answers-1", load_balancer=options)

    with pytest.raises(Exception, match="weapp did not restart"):
        scale_out_session_tier(params)

    fired = {r["action"]: r["fired"] for r in sandbox.admin("GET", "faults")}
    assert fired["CreateListener"] == fired["RegisterTargets"] == fired["CreateSecurityGroupPolicies"] == 1
    assert inventory(sandbox) == before, "a change whose answer was lost was not undone"
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])


def test_the_cluster_runs_both_tiers_under_one_key(guide: dict[str, Any], cloud_env: EmbeddedSandbox):
    sandbox = cloud_env
    before, configs = inventory(sandbox), business_configs(sandbox)
    params = cluster_params(guide, count=1)
    session, business = scale_out_cluster(params.model_copy(update={"run_key": None}))
    assert session.run_key == business.run_key

    removed = cleanup(sandbox, guide, session.run_key)

    assert sorted(removed.load_balancers) == sorted([session.load_balancer_id, business.load_balancer_id])
    assert sorted(removed.instances) == sorted(session.new_instance_ids + business.new_instance_ids)
    assert inventory(sandbox) == before
    assert_business_untouched(sandbox, configs, guide["auth_server_url"])


def test_scaling_out_a_cluster_again_reuses_its_clb(guide: dict[str, Any], cloud_env: EmbeddedSandbox):
    """ "Add 2 more before lunch": the default selectors (the tier tags) now match several servers, the CLB and
    listener are the tier's, and the business server already on the VIP is neither rewritten nor restarted."""
    sandbox = cloud_env
    first = scale_out_session_tier(session_params(guide, run_key="first-1", source=SESSION_TAG, count=1))
    business = guide["business_server"]["instance_id"]
    restarts = guest_status(sandbox, business)["restarts"]

    again = scale_out_session_tier(session_params(guide, run_key="again", source=SESSION_TAG, count=2))

    assert again.load_balancer_id == first.load_balancer_id and again.listener_id == first.listener_id
    assert again.vip == first.vip
    assert len(again.bound) == 4 and set(first.bound) < set(again.bound)
    (change,) = again.changes
    assert not change.changed, "the business server already pointed at the VIP"
    assert guest_status(sandbox, business)["restarts"] == restarts, "it was restarted again"
    clb = sdk_client(sandbox, ClbClient, guide["region"])
    assert clb.call_json("DescribeLoadBalancers", {})["Response"]["TotalCount"] == 1, "a second CLB was made"

    # The business tier the same way: first from the guide's server, then from the tier's members.
    out = scale_out_business_tier(business_params(guide, run_key="first-2", source=BUSINESS_TAG, count=1))
    more = scale_out_business_tier(business_params(guide, run_key="again-2", source=BUSINESS_TAG, count=1))
    assert more.load_balancer_id == out.load_balancer_id and len(more.bound) == 3

    # cleanup takes exactly its run's: `again` is not `again-2`, and the first runs' clusters stay whole
    kept = inventory(sandbox)
    cleanup(sandbox, guide, "again")
    left = inventory(sandbox)
    assert set(left["instances"]) == set(kept["instances"]) - set(again.new_instance_ids)
    assert set(more.new_instance_ids) <= set(left["instances"])
    cleanup(sandbox, guide, "again-2")
    left = inventory(sandbox)
    assert set(left["instances"]) == set(kept["instances"]) - set(again.new_instance_ids) - set(more.new_instance_ids)
    assert left["load_balancers"].keys() == kept["load_balancers"].keys()
