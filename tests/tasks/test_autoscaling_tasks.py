"""tasks/autoscaling against the sandbox through the real SDK: find-before-create by name, the activity waits
(an activity not listed yet is "not yet"; FAILED fails with the cloud's message), put = create or modify."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tasks import autoscaling as asg
from tasks import autoscaling_policies, autoscaling_undo
from tasks.autoscaling_launch_configurations import (
    create_launch_configuration,
    delete_launch_configuration,
    delete_tagged_launch_configurations,
    describe_launch_configuration,
    tagged_launch_configurations,
)
from tasks.cloud import CloudError, call_json, clients_for
from tasks.cvm import wait_servers_running
from tasks.waiters import WaitFailed
from tests.sdk import poll

REGION = "ap-guangzhou"
IMAGE = "img-l8og963d"  # the catalog's public CentOS
BEIJING = timezone(timedelta(hours=8))


def group(retry: str = "NO_RETRY") -> asg.Group:
    marks = {"tcscale:run": "t", "tcscale:tier": "business"}
    request = {"ImageId": IMAGE, "InstanceType": "S5.SMALL1"}
    lc, created = create_launch_configuration.fn(REGION, "t-lc", request, marks)
    again, created_again = create_launch_configuration.fn(REGION, "t-lc", {**request, "InstanceType": "x"}, {})
    assert created and not created_again and again.launch_configuration_id == lc.launch_configuration_id
    assert lc.tags == marks and [c.launch_configuration_id for c in tagged_launch_configurations(REGION, marks)] == [
        lc.launch_configuration_id
    ]
    subnets = call_json(clients_for(REGION).vpc, "DescribeSubnets", {})["SubnetSet"]
    subnet = next(s for s in subnets if s["IsDefault"])
    request = {
        "LaunchConfigurationId": lc.launch_configuration_id,
        "MinSize": 0,
        "MaxSize": 3,
        "VpcId": subnet["VpcId"],
        "SubnetIds": [subnet["SubnetId"]],
        "RetryPolicy": retry,
    }
    made, created = asg.create_group.fn(REGION, "t-asg", request, marks)
    same, created_again = asg.create_group.fn(REGION, "t-asg", request, {})
    assert created and not created_again and same.group_id == made.group_id and made.tags["tcscale:run"] == "t"
    return made


def test_an_activity_not_listed_yet_is_waited_for(cloud_env):
    g = group()
    cloud_env.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.2})
    answer = call_json(clients_for(REGION).autoscaling, "ScaleOutInstances",
                       {"AutoScalingGroupId": g.group_id, "ScaleOutNumber": 1})  # fmt: skip
    assert asg.describe_activity(REGION, answer["ActivityId"]) is None  # eventual consistency: not listed yet
    done = asg.wait_activity.fn(REGION, answer["ActivityId"], 120, 0.5)
    assert done.status == "SUCCESSFUL" and done.type == "SCALE_OUT" and len(done.instances) == 1
    settled = asg.wait_settled.fn(REGION, g.group_id, 120, 0.5)
    assert settled.in_service == 1


def test_a_failed_launch_fails_the_wait_with_the_clouds_message(cloud_env):
    g = group()
    cloud_env.admin(
        "POST", "faults", {"service": "cvm", "action": "RunInstances", "async_failure": "no stock", "count": 1}
    )
    known = {a.activity_id for a in asg.activities(REGION, g.group_id)}
    asg.modify_desired.fn(REGION, g.group_id, 1)
    with pytest.raises(WaitFailed, match=r"FAILED: .*no stock"):
        asg.wait_new_activities.fn(REGION, g.group_id, known, 30, 0.2)


def test_put_creates_then_modifies_and_delete_says_whether_there_was_one(cloud_env):
    g = group()
    start = (datetime.now(BEIJING) + timedelta(days=1)).replace(hour=10, minute=54, second=0, microsecond=0)
    action = asg.ScheduledAction(
        name="tcscale-business-peak-out", min_size=0, max_size=3, desired=2, start_time=start.isoformat(),
        end_time=(start + timedelta(days=30)).isoformat(), recurrence="54 10 * * *",
    )  # fmt: skip
    made = autoscaling_policies.put_scheduled_action.fn(REGION, g.group_id, action)
    changed = autoscaling_policies.put_scheduled_action.fn(REGION, g.group_id, action.model_copy(update={"desired": 3}))
    (listed,) = autoscaling_policies.scheduled_actions(REGION, g.group_id)
    assert made.action_id == changed.action_id == listed.action_id and listed.desired == 3
    assert listed.start_time == start.isoformat() and listed.recurrence == "54 10 * * *"
    policy = asg.AlarmPolicy(name="tcscale-business-cpu-high", adjustment=1, operator="GREATER_THAN", threshold=70,
                             period=60, continuous_time=5, cooldown=300)  # fmt: skip
    first = autoscaling_policies.put_alarm_policy.fn(REGION, g.group_id, policy)
    autoscaling_policies.put_alarm_policy.fn(REGION, g.group_id, policy.model_copy(update={"threshold": 80}))
    (found,) = autoscaling_policies.alarm_policies(REGION, g.group_id)
    assert found.policy_id == first.policy_id and found.threshold == 80 and found.same_as(policy.model_copy(
        update={"threshold": 80}))  # fmt: skip
    assert autoscaling_policies.delete_alarm_policy.fn(REGION, g.group_id, policy.name) is True
    assert autoscaling_policies.delete_alarm_policy.fn(REGION, g.group_id, policy.name) is False
    assert autoscaling_policies.delete_scheduled_action.fn(REGION, g.group_id, action.name) is True
    assert autoscaling_policies.delete_scheduled_action.fn(REGION, g.group_id, action.name) is False


def test_delete_group_empties_it_first(cloud_env):
    g = group()
    asg.modify_desired.fn(REGION, g.group_id, 2)
    asg.wait_settled.fn(REGION, g.group_id, 30, 0.2)
    assert autoscaling_undo.delete_group.fn(REGION, g.group_id, 60) is True
    assert asg.describe_group(REGION, g.group_id) is None
    assert autoscaling_undo.delete_group.fn(REGION, g.group_id, 60) is False
    assert delete_launch_configuration.fn(REGION, g.launch_configuration_id) is True


def test_delete_group_stops_while_servers_are_attached(cloud_env):
    """Detaching deregisters a server from the group's CLB listener, a binding it had before the attach (only the
    attach's own undo, `detach`, binds it again): deleting the group never takes attached servers away, it stops and
    names them."""
    g = group()
    cvm = clients_for(REGION).cvm
    launch = {"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": IMAGE, "InstanceType": "S5.SMALL1",
              "VirtualPrivateCloud": {"VpcId": g.vpc_id, "SubnetId": g.subnet_ids[0]}}  # fmt: skip
    ids = call_json(cvm, "RunInstances", launch)["InstanceIdSet"]
    wait_servers_running.fn(REGION, ids, 30, 0.2)
    asg.wait_activity.fn(REGION, asg.attach_instances.fn(REGION, g.group_id, ids), 30, 0.2)
    with pytest.raises(RuntimeError, match=f"{g.group_id} still has attached servers {ids[0]}"):
        autoscaling_undo.delete_group.fn(REGION, g.group_id, 30)
    assert [m.instance_id for m in asg.members(REGION, g.group_id)] == ids


def test_delete_tagged_launch_configurations_deletes_only_the_runs_unused_ones(cloud_env):
    g = group()
    request = {"ImageId": IMAGE, "InstanceType": "S5.SMALL1"}
    operators, _ = create_launch_configuration.fn(REGION, "operators", request, {})
    with pytest.raises(RuntimeError, match=rf"{g.launch_configuration_id} \(t-lc\) is used by {g.group_id}"):
        delete_tagged_launch_configurations.fn(REGION, {"tcscale:run": "t"})
    assert autoscaling_undo.delete_group.fn(REGION, g.group_id, 60)
    assert delete_tagged_launch_configurations.fn(REGION, {"tcscale:run": "t"}) == [g.launch_configuration_id]
    assert delete_tagged_launch_configurations.fn(REGION, {"tcscale:run": "t"}) == []
    assert describe_launch_configuration(REGION, operators.launch_configuration_id) is not None


def test_restore_group_puts_back_only_what_still_holds_the_runs_value(cloud_env):
    g = group()
    asg.modify_group.fn(REGION, g.group_id, {"MaxSize": 5, "TerminationPolicies": ["NEWEST_INSTANCE"]})
    asg.modify_group.fn(REGION, g.group_id, {"MaxSize": 4})  # someone else's later change
    written = {"MaxSize": 5, "TerminationPolicies": ["NEWEST_INSTANCE"]}
    previous = {"MaxSize": 3, "TerminationPolicies": g.termination_policies}
    assert autoscaling_undo.restore_group.fn(REGION, g.group_id, written, previous)
    restored = asg.describe_group(REGION, g.group_id) or pytest.fail("gone")
    assert restored.max_size == 4 and restored.termination_policies == g.termination_policies
    assert not autoscaling_undo.restore_group.fn(REGION, g.group_id, written, previous)


def desired_once_landed(sandbox, group_id: str) -> int:
    """The group's desired capacity once every request the sandbox holds has landed (a write its client gave up on
    included)."""
    poll(lambda: sandbox.admin("GET", "stats")["in_flight"], done=lambda n: n == 0, what="the held write", timeout=10)
    return (asg.describe_group(REGION, group_id) or pytest.fail("the group is gone")).desired


# The first ModifyDesiredCapacity is held past the client's deadline (1 s) and lands 1.5 s after it was sent.
LATE_WRITE = {"service": "as", "action": "ModifyDesiredCapacity", "latency_ms": 1500, "count": 1}


def test_a_write_whose_answer_was_lost_never_lands_over_a_later_one(cloud_env, monkeypatch):
    """desired 0 -> 1: the first request times out on the client and its retry lands at once; the run then writes 0
    back while the first request is still held. That write waits until the lost one can no longer land (the API has
    no conditional write), so the group ends where the run left it, not one server larger."""
    g = group()
    monkeypatch.setenv("TCSCALE_REQUEST_TIMEOUT", "1")
    cloud_env.admin("POST", "faults", LATE_WRITE)
    asg.modify_desired.fn(REGION, g.group_id, 1)
    asg.modify_desired.fn(REGION, g.group_id, 0)
    assert desired_once_landed(cloud_env, g.group_id) == 0


def test_an_undo_puts_back_a_write_that_lands_after_the_run_gave_up_on_it(cloud_env, monkeypatch):
    """desired 0 -> 1 times out, its retry is refused (InternalError): the run fails with the write in doubt. Its undo
    waits until the write can no longer land, then finds the value the run wrote and puts the original back."""
    g = group()
    monkeypatch.setenv("TCSCALE_REQUEST_TIMEOUT", "1")
    cloud_env.admin("POST", "faults", LATE_WRITE)
    refused = {"service": "as", "action": "ModifyDesiredCapacity", "error_code": "InternalError", "skip": 1, "count": 1}
    cloud_env.admin("POST", "faults", refused)
    with pytest.raises(CloudError, match="InternalError"):
        asg.modify_desired.fn(REGION, g.group_id, 1)
    assert autoscaling_undo.restore_desired.fn(REGION, g.group_id, 1, 0, 30, 0.2) is True
    assert desired_once_landed(cloud_env, g.group_id) == 0


def test_an_attach_whose_answer_was_lost_is_found_not_made_again(cloud_env):
    """AttachInstances took effect and its answer was lost (a 502, a dropped connection): the retry finds the servers
    in the group and answers that attach's activity, instead of attaching again ("already in the scaling group")."""
    g = group()
    launch = {"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": IMAGE, "InstanceType": "S5.SMALL1",
              "VirtualPrivateCloud": {"VpcId": g.vpc_id, "SubnetId": g.subnet_ids[0]}}  # fmt: skip
    ids = call_json(clients_for(REGION).cvm, "RunInstances", launch)["InstanceIdSet"]
    wait_servers_running.fn(REGION, ids, 30, 0.2)
    lost = {"service": "as", "action": "AttachInstances", "lose_answer": True, "count": 1}
    cloud_env.admin("POST", "faults", lost)
    cloud_env.admin("POST", "stats/reset")
    activity = asg.attach_instances.fn(REGION, g.group_id, ids)
    done = asg.wait_activity.fn(REGION, activity, 30, 0.2)
    assert done.type == "ATTACH_INSTANCES" and set(done.instances) == set(ids)
    assert cloud_env.admin("GET", "stats")["requests"]["as"]["AttachInstances"] == 1
