"""Auto Scaling state survives a restart with --state-dir: groups, instances, activities, schedules, policies."""

from datetime import timedelta
from pathlib import Path

import pytest

from sandbox.core.emulated_cloud import SandboxConfig
from sandbox.server import EmbeddedSandbox
from tests.sandbox.as_world import World
from tests.sandbox.test_autoscaling_policies import ALARM
from tests.sandbox.test_autoscaling_schedules import advance_to, beijing, sandbox_now
from tests.sdk import sdk_client


def world_of(server: EmbeddedSandbox) -> World:
    return World(lambda cls, **kw: sdk_client(server, cls, **kw), server)


@pytest.mark.sandbox  # its own embedded sandboxes
def test_state_survives_a_restart(tmp_path: Path) -> None:
    config = SandboxConfig(port=0, rate_limit=0, state_dir=tmp_path, dataplane=False)
    with EmbeddedSandbox(config) as first:
        world = world_of(first)
        forward = world.listener()
        lc_id = world.launch_configuration(LoginSettings={"Password": "Sandbox-Pass-1"})
        group_id = world.group(lc_id, forward=forward, DesiredCapacity=1)
        world.settle(group_id)
        start = sandbox_now(first) + timedelta(hours=1)
        world.a(
            "CreateScheduledAction",
            AutoScalingGroupId=group_id,
            ScheduledActionName="peak",
            MinSize=0,
            MaxSize=5,
            DesiredCapacity=2,
            StartTime=beijing(start),
        )
        world.a(
            "CreateScalingPolicy",
            AutoScalingGroupId=group_id,
            ScalingPolicyName="cpu",
            MetricAlarm=ALARM,
            AdjustmentType="CHANGE_IN_CAPACITY",
            AdjustmentValue=1,
        )
        members = [m.InstanceId for m in world.instances(group_id)]
        activities = [(a.ActivityId, a.StatusCode) for a in world.activities(group_id)]
    with EmbeddedSandbox(SandboxConfig(**{**config.model_dump(), "port": 0})) as second:
        world = world_of(second)
        assert [m.InstanceId for m in world.instances(group_id)] == members
        assert [(a.ActivityId, a.StatusCode) for a in world.activities(group_id)] == activities
        assert world.a("DescribeScalingPolicies").TotalCount == 1
        assert world.a("DescribeScheduledActions").ScheduledActionSet[0].StartTime == beijing(start)
        advance_to(second, start)  # the schedule still fires after the restart
        assert world.settle(group_id).InServiceInstanceCount == 2
        assert len(world.targets(*forward)) == 2
        # the launch configuration's login password (kept as a hash beside the state) reaches the new server
        cvm = second.cloud.backends["cvm"].state.instances  # type: ignore[attr-defined]
        assert all(cvm[m.InstanceId].password_hash for m in world.instances(group_id))
        assert "Sandbox-Pass-1" not in (tmp_path / "state.json").read_text()
