"""Auto Scaling changes are undone by the run's marks, never anyone else's (issue 14, defects 4 and 5).

A launch configuration or scaling group whose create answer was lost is still undone (found by the run's tags);
`cleanup-run` deletes only launch configurations carrying the run's tag; a failed launch check puts the desired
capacity back, but never over someone else's later change; so does `cleanup-run` with a run's kept capacity change.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tencentcloud.autoscaling.v20180419 import models as as_models
from tencentcloud.autoscaling.v20180419.autoscaling_client import AutoscalingClient

from flows.autoscaling_steps import plan
from flows.configure_autoscaling import configure_autoscaling
from flows.scale_out import scale_out_business_tier
from flows.shared.ledger import CapacityChange, forget_capacity, remember_capacity, remembered_capacities
from flows.verify_autoscaling import verify_autoscaling
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks import autoscaling_undo, cvm
from tasks.autoscaling_launch_configurations import describe_launch_configuration
from tasks.cvm import RUN_TAG
from tests.flows.autoscaling_support import autoscaling_params, cleanup_autoscaling
from tests.flows.support import business_params, inventory
from tests.sdk import sdk_client

KEY = "as-undo-1"
QUIET = {"peak": {"enabled": False}, "alarms": {"enabled": False}}  # fewer steps: the tests stay short


def business_only(guide: dict[str, Any], **scaling: Any) -> Any:
    params = autoscaling_params(guide, **{**QUIET, **scaling})
    params.tiers = ["business"]
    params.run_key = KEY
    return params


def as_state(sandbox: EmbeddedSandbox) -> dict[str, Any]:
    return sandbox.admin("GET", "state")["services"]["as"]


def create_lc(sandbox: EmbeddedSandbox, guide: dict[str, Any], name: str, image_id: str, tags: dict[str, str]) -> str:
    """A launch configuration made outside the flows (by the operator, or left by a killed run), through the SDK."""
    client = sdk_client(sandbox, AutoscalingClient, guide["region"])
    request = as_models.CreateLaunchConfigurationRequest()
    (source,) = cvm.describe_servers(guide["region"], [guide["business_server"]["instance_id"]])
    body: dict[str, Any] = {
        "LaunchConfigurationName": name,
        "ImageId": image_id,
        "InstanceType": "S5.SMALL1",
        "SecurityGroupIds": source.security_group_ids,  # as an operator makes one: its servers are reachable
    }
    if tags:
        body["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    request.from_json_string(json.dumps(body))
    return str(client.CreateLaunchConfiguration(request).LaunchConfigurationId)


def cleanup(guide: dict[str, Any]) -> Any:
    return cleanup_autoscaling(guide, KEY)


def test_creations_whose_answers_were_lost_are_undone(guide, cloud_env):
    """Defect 4: CreateLaunchConfiguration and CreateAutoScalingGroup take effect but their answers are lost; the
    retry finds them by name. A later AttachInstances failure must still remove both, then the image."""
    scale_out_business_tier(business_params(guide, count=1))
    before = inventory(cloud_env)
    for action in ("CreateLaunchConfiguration", "CreateAutoScalingGroup"):
        cloud_env.admin("POST", "faults", {"service": "as", "action": action, "lose_answer": True, "count": 1})
    fault = {"service": "as", "action": "AttachInstances", "error_code": "InternalError", "count": 10}
    cloud_env.admin("POST", "faults", fault)
    with pytest.raises(Exception, match="InternalError"):
        configure_autoscaling(business_only(guide))
    state = as_state(cloud_env)
    assert not state["groups"], "the scaling group whose answer was lost was left behind"
    assert not state["launch_configurations"], "the launch configuration whose answer was lost was left behind"
    assert inventory(cloud_env) == before


def test_launch_configurations_carry_the_run_tags(guide, cloud_env):
    scale_out_business_tier(business_params(guide, count=1))
    (outcome,) = configure_autoscaling(business_only(guide))
    lc_id = outcome.launch_configuration_id or ""
    (lc,) = [
        lc for lc in as_state(cloud_env)["launch_configurations"].values() if lc["launch_configuration_id"] == lc_id
    ]
    assert lc["tags"] == {RUN_TAG: KEY, "tcscale:tier": "business"}


def test_cleanup_deletes_only_the_runs_launch_configurations(guide, cloud_env):
    """Defect 4: an operator's launch configuration (adopted by name by the run's group) stays; one the killed run
    made before its group (tagged, used by no group) is found by its tag and deleted."""
    region = guide["region"]
    scaled = scale_out_business_tier(business_params(guide, count=1))
    image = scaled.image_id or ""
    operators = create_lc(cloud_env, guide, plan.launch_configuration_name("business", image), image, {})
    (outcome,) = configure_autoscaling(business_only(guide, image_id=image))
    assert outcome.launch_configuration_id == operators  # adopted by name: not the run's
    leftover = create_lc(cloud_env, guide, "tcscale-business-killed", image, {RUN_TAG: KEY, "tcscale:tier": "business"})
    unrelated = create_lc(cloud_env, guide, "operators-own", image, {})

    removed = cleanup(guide)
    assert not removed.failed, removed.failed
    assert removed.launch_configurations == [leftover]
    assert asg.describe_group(region, outcome.group_id or "") is None
    assert describe_launch_configuration(region, leftover) is None
    assert describe_launch_configuration(region, operators) is not None, "the operator's was deleted"
    assert describe_launch_configuration(region, unrelated) is not None


def test_a_failed_verify_restores_the_desired_capacity(guide, cloud_env, monkeypatch):
    """Defect 5: ModifyDesiredCapacity takes effect but every answer is lost: the run fails, desired is back."""
    # The restore first waits out the lost +1 (twice the request timeout: 60 s at the product's 30 s); the sandbox
    # answers in milliseconds, so a 2 s timeout keeps the rule and spares the test a minute.
    monkeypatch.setenv("TCSCALE_REQUEST_TIMEOUT", "2")
    region = guide["region"]
    scale_out_business_tier(business_params(guide, count=1))
    (outcome,) = configure_autoscaling(business_only(guide))
    group_id = outcome.group_id or ""
    desired = (asg.describe_group(region, group_id) or pytest.fail("no group")).desired
    fault = {"service": "as", "action": "ModifyDesiredCapacity", "lose_answer": True, "count": 6}
    cloud_env.admin("POST", "faults", fault)
    with pytest.raises(Exception):  # noqa: B017 - a lost answer: whatever the SDK raises
        verify_autoscaling(business_only(guide))
    group = asg.wait_settled.fn(region, group_id, 60, 0.2)
    assert group.desired == desired, f"the failed verify left {group_id} at {group.desired}, was {desired}"


def test_restoring_the_desired_capacity_never_overwrites_a_later_change(cloud_env):
    """Defect 5: the undo restores only while the desired capacity is still the value the run set."""
    from tests.tasks.test_autoscaling_tasks import REGION, group

    g = group()
    asg.modify_desired.fn(REGION, g.group_id, 2)
    asg.wait_settled.fn(REGION, g.group_id, 60, 0.2)
    assert not autoscaling_undo.restore_desired.fn(
        REGION, g.group_id, written=1, previous=0, timeout=60
    )  # 2: someone else's
    assert (asg.describe_group(REGION, g.group_id) or pytest.fail("gone")).desired == 2
    assert autoscaling_undo.restore_desired.fn(REGION, g.group_id, written=2, previous=0, timeout=60)
    assert asg.wait_settled.fn(REGION, g.group_id, 60, 0.2).desired == 0


def test_cleanup_puts_back_a_kept_capacity_change_only_over_the_runs_value(guide, cloud_env):
    """Crash matrix: a run killed after its ModifyDesiredCapacity (verify-autoscaling's + 1) left only its kept change;
    cleanup-run of its key puts the capacity back while the group desires what the run wrote, never over a later
    value (that one is left and reported with its fix)."""
    from tests.tasks.test_autoscaling_tasks import REGION, group

    g = group()
    kept = CapacityChange(region=REGION, group_id=g.group_id, previous=0, target=1)
    asg.modify_desired.fn(REGION, g.group_id, 1)
    remember_capacity(KEY, kept)
    removed = cleanup(guide)
    assert removed.capacities_restored == [f"{g.group_id}: 1 -> 0"] and not removed.failed
    assert asg.wait_settled.fn(REGION, g.group_id, 60, 0.2).desired == 0
    assert remembered_capacities(KEY) == [], "a put-back change is forgotten: never restored again"

    asg.modify_desired.fn(REGION, g.group_id, 2)  # someone else's, after the run wrote 1
    remember_capacity(KEY, kept)
    removed = cleanup(guide)
    assert not removed.capacities_restored and [u.what for u in removed.capacities_left] == [kept.described()]
    assert asg.wait_settled.fn(REGION, g.group_id, 60, 0.2).desired == 2
    forget_capacity(KEY)  # the session's Prefect server outlives this test's sandbox


def test_cleanup_puts_back_a_plan_steps_floor_with_its_desired_capacity(guide, cloud_env):
    """A plan step's set-capacity (floor: MinSize written with the desired capacity) killed after its write: cleanup-run
    puts both back while they hold what the run wrote; a minimum set since stays."""
    from tests.tasks.test_autoscaling_tasks import REGION, group

    g = group()
    kept = CapacityChange(region=REGION, group_id=g.group_id, previous=0, target=2, previous_min=0, target_min=2)
    remember_capacity(KEY, kept)
    asg.modify_desired.fn(REGION, g.group_id, 2, 2)
    removed = cleanup(guide)
    assert removed.capacities_restored == [f"{g.group_id}: 2 -> 0"] and not removed.failed
    back = asg.wait_settled.fn(REGION, g.group_id, 60, 0.2)
    assert (back.desired, back.min_size) == (0, 0)

    remember_capacity(KEY, kept)
    asg.modify_desired.fn(REGION, g.group_id, 2, 1)  # the run's desired, someone else's minimum
    cleanup(guide)
    back = asg.wait_settled.fn(REGION, g.group_id, 60, 0.2)
    assert (back.desired, back.min_size) == (1, 1), "the desired capacity goes back as far as the later minimum lets it"
    forget_capacity(KEY)  # the session's Prefect server outlives this test's sandbox


def test_a_set_capacity_rerun_applies_its_kept_target_or_refuses_another(guide, cloud_env):
    """Crash matrix: the same run key's set-capacity never counts a relative change again from what it reached."""
    from flows.parameters import CapacityParameters
    from flows.set_capacity import planned_target
    from tests.tasks.test_autoscaling_tasks import REGION, group

    g = group().model_copy(update={"desired": 3})  # + 1 from 2 went through before the run was killed
    remember_capacity(KEY, CapacityChange(region=REGION, group_id=g.group_id, previous=2, target=3, asked="+1"))
    assert planned_target(KEY, CapacityParameters(tier="business", capacity="+1"), g) == (3, "")
    with pytest.raises(ValueError, match=r"already set the desired capacity .* give another run key"):
        planned_target(KEY, CapacityParameters(tier="business", capacity="+2"), g)
    assert planned_target("another-key", CapacityParameters(tier="business", capacity="-1"), g)[0] == 2
    forget_capacity(KEY)  # the session's Prefect server outlives this test's sandbox
