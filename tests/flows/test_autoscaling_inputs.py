"""Auto Scaling flows: bad input refused before any change, the dry run's difference, and the undo of a failed run."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from tencentcloud.clb.v20180317 import models as clb_models
from tencentcloud.clb.v20180317.clb_client import ClbClient

from flows.configure_autoscaling import configure_autoscaling
from flows.parameters import AutoScalingParameters, CapacityParameters, LoadBalancerOptions
from flows.scale_out import scale_out_cluster
from flows.scale_out_steps.preflight import PreflightFailed
from flows.set_capacity import set_capacity
from flows.shared.ledger import remembered_group_changes
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tests.flows.autoscaling_support import autoscaling_params
from tests.flows.support import cluster_params, inventory
from tests.flows.test_preflight import create_load_balancer, default_vpc
from tests.sdk import poll, sdk_client


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [
        ({"min_size": 3, "max_size": 2}, "min_size 3 > max_size 2"),
        ({"min_size": 1, "max_size": 3, "desired": 4}, "desired 4 is outside the group's bounds [1, 3]"),
        ({"min_size": 2, "desired": 1}, "desired 1 is outside"),
        ({"max_size": 2001}, "less than or equal to 2000"),
        ({"alarms": {"high": {"threshold": 101, "minutes": 5, "adjustment": 1}}}, "less than or equal to 100"),
        ({"alarms": {"high": {"threshold": 0, "minutes": 5, "adjustment": 1}}}, "greater than or equal to 1"),
        ({"alarms": {"low": {"threshold": 20, "minutes": 12, "adjustment": -1}}}, "a multiple of 5"),
        ({"alarms": {"low": {"threshold": 80, "minutes": 15, "adjustment": -1}}}, "must be below the high one"),
        ({"alarms": {"high": {"threshold": 70, "minutes": 5, "adjustment": -1}}}, "the high alarm adds servers"),
        ({"peak": {"days_of_week": "0-5"}}, "1 (Monday) .. 7"),
        ({"peak": {"days_of_week": "MON"}}, "String should match pattern"),
        ({"peak": {"start": "13:00", "end": "11:00"}}, "must start before it ends"),
        ({"peak": {"start": "24:00"}}, "String should match pattern"),
        ({"cost": {"load_profile": [1, 2]}}, "at least 24 items"),
    ],
)
def test_bad_parameters_refused(scaling: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as refused:
        AutoScalingParameters.model_validate(scaling)
    assert expected in str(refused.value)


def test_bad_capacity_refused() -> None:
    with pytest.raises(ValidationError):
        CapacityParameters.model_validate({"tier": "business", "capacity": "two"})
    assert CapacityParameters(tier="business", capacity="+2").target(3) == 5
    assert CapacityParameters(tier="business", capacity="-1").target(3) == 2
    assert CapacityParameters(tier="business", capacity="4").target(3) == 4
    assert CapacityParameters.model_validate({"tier": "business", "capacity": 4}).target(3) == 4  # --param capacity=4


def refused(sandbox: EmbeddedSandbox, params: Any) -> str:
    before = inventory(sandbox)
    with pytest.raises(PreflightFailed) as error:
        configure_autoscaling(params)
    assert inventory(sandbox) == before, "a refused run changed the cloud"
    assert not sandbox.admin("GET", "state")["services"]["as"]["groups"], "a refused run made a scaling group"
    return str(error.value)


def test_preflight_refuses_every_problem_at_once(guide, cloud_env):
    """The seeded guide: its servers are behind no CLB yet; a past EndTime, a missing image, a foreign subnet."""
    vpc_id, subnet_id = default_vpc(cloud_env, guide)
    params = autoscaling_params(
        guide,
        image_id="img-n0tthere",
        subnet_ids=[subnet_id],
        max_size=2,
        peak={"end_time": "2020-01-01T13:00:00+08:00"},
    )
    params.tiers = ["session"]
    message = refused(cloud_env, params)
    assert "behind no INTERNAL CLB: run scale-out-session-tier first" in message
    assert "image img-n0tthere is not found, not NORMAL" in message
    assert f"subnet {subnet_id} is in VPC {vpc_id}" in message
    assert "peak.end_time 2020-01-01T13:00:00+08:00 is in the past" in message
    assert "the peak needs 1 + 2 servers, more than max_size 2" in message


def test_listener_of_another_vpc_or_protocol_refused(guide, cloud_env):
    vpc_id, subnet_id = default_vpc(cloud_env, guide)
    foreign = create_load_balancer(cloud_env, guide, "INTERNAL", vpc_id, subnet_id)
    params = autoscaling_params(guide)
    params.tiers = ["session"]
    port = params.session.load_balancer.listener_port
    params.session.load_balancer = LoadBalancerOptions(load_balancer_id=foreign, listener_port=port)
    message = refused(cloud_env, params)
    assert f"load balancer {foreign} is in VPC {vpc_id}" in message

    own = create_load_balancer(cloud_env, guide, "INTERNAL", guide["vpc"]["vpc_id"], guide["subnet"]["subnet_id"])
    clb = sdk_client(cloud_env, ClbClient, guide["region"])
    request = clb_models.CreateListenerRequest()
    request.from_json_string(json.dumps({"LoadBalancerId": own, "Ports": [port], "Protocol": "UDP"}))
    listener = clb.CreateListener(request)
    status = clb_models.DescribeTaskStatusRequest()
    status.TaskId = listener.RequestId
    poll(lambda: clb.DescribeTaskStatus(status).Status == 0, what="UDP listener")
    params.session.load_balancer = LoadBalancerOptions(load_balancer_id=own, listener_port=port)
    message = refused(cloud_env, params)
    assert "is UDP, the tier's is TCP" in message


def test_dry_run_shows_the_difference_and_changes_nothing(guide, cloud_env):
    scale_out_cluster(cluster_params(guide, count=1))
    before = inventory(cloud_env)
    params = autoscaling_params(guide)
    params.dry_run = True
    for outcome in configure_autoscaling(params):
        assert outcome.dry_run and outcome.group_id is None
        text = "\n".join(outcome.differences)
        assert "create launch configuration" in text and "create scaling group tcscale-" in text
        assert "attach the" in text and "create scheduled action" in text and "create alarm policy" in text
        assert "Difference would apply" in outcome.report
    assert inventory(cloud_env) == before
    assert not cloud_env.admin("GET", "state")["services"]["as"]["groups"]


def test_failed_configure_is_undone_and_the_tier_keeps_serving(guide, cloud_env):
    """An alarm policy the cloud refuses: the group, its launch configuration and image go; the servers it
    attached stay, bound to the tier's listener as before; nothing is left kept for a cleanup-run."""
    scale_out_cluster(cluster_params(guide, count=1))
    before = inventory(cloud_env)
    fault = {"service": "as", "action": "CreateScalingPolicy", "error_code": "InternalError", "count": 10}
    cloud_env.admin("POST", "faults", fault)
    params = autoscaling_params(guide)
    params.tiers, params.run_key = ["business"], "failed-configure"
    with pytest.raises(Exception, match="InternalError"):
        configure_autoscaling(params)
    assert inventory(cloud_env) == before
    assert remembered_group_changes("failed-configure") == [], "an undone change is still kept for cleanup-run"
    state = cloud_env.admin("GET", "state")["services"]["as"]
    assert not state["groups"] and not state["launch_configurations"]
    assert asg.find_group(guide["region"], "tcscale-business") is None


def test_set_capacity_without_a_group_says_what_to_do(guide, cloud_env):
    params = CapacityParameters(tier="business", capacity="+1", business=autoscaling_params(guide).business)
    with pytest.raises(LookupError, match="run configure-autoscaling"):
        set_capacity(params)
