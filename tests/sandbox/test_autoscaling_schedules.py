"""Scheduled actions through the real SDK: ONCE and CRONTAB (Beijing time), firing when the sandbox clock passes."""

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.sandbox.as_world import World, error_of
from tests.sdk import poll

BEIJING = timezone(timedelta(hours=8))


@pytest.fixture
def world(client: Any, sandbox: Any) -> World:
    return World(client, sandbox)


def sandbox_now(sandbox: Any) -> datetime:
    return datetime.fromisoformat(sandbox.admin("GET", "clock")["now"].replace("Z", "+00:00")).astimezone(BEIJING)


def beijing(moment: datetime) -> str:
    return moment.astimezone(BEIJING).replace(microsecond=0).isoformat()


def advance_to(sandbox: Any, moment: datetime) -> None:
    seconds = (moment - sandbox_now(sandbox)).total_seconds()
    sandbox.admin("POST", "clock", {"advance": max(seconds, 0) + 1})


def schedule(world: World, group_id: str, name: str, start: datetime, **extra: Any) -> str:
    params = {
        "AutoScalingGroupId": group_id,
        "ScheduledActionName": name,
        "MinSize": 0,
        "MaxSize": 5,
        "DesiredCapacity": 2,
        "StartTime": beijing(start),
        **extra,
    }
    return world.a("CreateScheduledAction", **params).ScheduledActionId


def test_once_fires_when_the_clock_passes_its_start(world: World, sandbox: Any) -> None:
    group_id = world.group(world.launch_configuration())
    start = sandbox_now(sandbox) + timedelta(hours=1)
    action_id = schedule(world, group_id, "peak", start, DesiredCapacity=2)
    action = world.a("DescribeScheduledActions", ScheduledActionIds=[action_id]).ScheduledActionSet[0]
    assert (action.ScheduledType, action.StartTime, action.Recurrence) == ("ONCE", beijing(start), "")
    assert action.StartTime.endswith("+08:00") and (action.MinSize, action.MaxSize, action.DesiredCapacity) == (0, 5, 2)
    sandbox.admin("POST", "clock", {"advance": 1800})
    assert world.describe_group(group_id).DesiredCapacity == 0
    advance_to(sandbox, start)
    group = world.settle(group_id)
    assert (group.DesiredCapacity, group.InServiceInstanceCount) == (2, 2)
    [activity] = world.activities(group_id)
    assert action_id in activity.Cause and "peak" in activity.Cause and activity.StatusCode == "SUCCESSFUL"


def test_lunch_peak_crontab_fires_every_day_until_end_time(world: World, sandbox: Any) -> None:
    group_id = world.group(world.launch_configuration(), DesiredCapacity=1, MinSize=1)
    world.settle(group_id)
    now = sandbox_now(sandbox)
    eleven = (now + timedelta(days=1)).replace(hour=11, minute=0, second=0, microsecond=0)
    end = eleven + timedelta(days=2, hours=3)  # two more days of peaks after the first
    schedule(
        world,
        group_id,
        "lunch-out",
        eleven,
        MinSize=1,
        DesiredCapacity=3,
        Recurrence="0 11 * * *",
        EndTime=beijing(end),
    )
    schedule(
        world,
        group_id,
        "lunch-in",
        eleven + timedelta(hours=2),
        MinSize=1,
        DesiredCapacity=1,
        Recurrence="0 13 * * *",
        EndTime=beijing(end),
    )
    listed = world.a("DescribeScheduledActions", Filters=[{"Name": "auto-scaling-group-id", "Values": [group_id]}])
    assert {a.ScheduledType for a in listed.ScheduledActionSet} == {"CRONTAB"} and listed.TotalCount == 2
    for day in range(3):
        advance_to(sandbox, eleven + timedelta(days=day))
        assert world.settle(group_id).InServiceInstanceCount == 3, f"day {day} at 11:00"
        advance_to(sandbox, eleven + timedelta(days=day, hours=2))
        assert world.settle(group_id).InServiceInstanceCount == 1, f"day {day} at 13:00"
    advance_to(sandbox, eleven + timedelta(days=3))  # after EndTime: nothing fires
    group = world.idle(group_id)
    assert (group.DesiredCapacity, group.InstanceCount) == (1, 1)


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"StartTime": "2020-01-01T11:00:00+08:00"}, "InvalidParameterValue.StartTimeBeforeCurrentTime"),
        ({"StartTime": "2099-01-01 11:00:00"}, "InvalidParameterValue.TimeFormat"),
        ({"StartTime": "2099-01-01T11:00:00Z"}, "InvalidParameterValue.TimeFormat"),
        (
            {"Recurrence": "0 11 * *", "EndTime": "2099-02-01T11:00:00+08:00"},
            "InvalidParameterValue.CronExpressionIllegal",
        ),
        (
            {"Recurrence": "0 25 * * *", "EndTime": "2099-02-01T11:00:00+08:00"},
            "InvalidParameterValue.CronExpressionIllegal",
        ),
        ({"Recurrence": "0 11 * * *"}, "InvalidParameter.Conflict"),
        (
            {"Recurrence": "0 11 * * *", "EndTime": "2098-01-01T11:00:00+08:00"},
            "InvalidParameterValue.EndTimeBeforeStartTime",
        ),
        ({"MinSize": 3, "DesiredCapacity": 2}, "InvalidParameterValue.Size"),
    ],
)
def test_scheduled_action_errors(world: World, extra: dict[str, Any], code: str) -> None:
    group_id = world.group(world.launch_configuration())
    params = {
        "AutoScalingGroupId": group_id,
        "ScheduledActionName": "x",
        "MinSize": 0,
        "MaxSize": 5,
        "DesiredCapacity": 2,
        "StartTime": "2099-01-01T11:00:00+08:00",
        **extra,
    }
    assert error_of(lambda: world.a("CreateScheduledAction", **params)).code == code


def test_modify_delete_and_duplicates(world: World, sandbox: Any) -> None:
    group_id = world.group(world.launch_configuration())
    start = sandbox_now(sandbox) + timedelta(hours=2)
    action_id = schedule(world, group_id, "peak", start)
    assert error_of(lambda: schedule(world, group_id, "peak", start)).code == (
        "InvalidParameterValue.ScheduledActionNameDuplicate"
    )
    later = start + timedelta(hours=1)
    world.a(
        "ModifyScheduledAction",
        ScheduledActionId=action_id,
        DesiredCapacity=1,
        StartTime=beijing(later),
        ScheduledActionName="peak-2",
    )
    action = world.a("DescribeScheduledActions", ScheduledActionIds=[action_id]).ScheduledActionSet[0]
    assert (action.ScheduledActionName, action.DesiredCapacity, action.StartTime) == ("peak-2", 1, beijing(later))
    advance_to(sandbox, start)
    assert world.idle(group_id).DesiredCapacity == 0  # moved: not at the old time
    advance_to(sandbox, later)
    assert world.settle(group_id).DesiredCapacity == 1
    world.a("DeleteScheduledAction", ScheduledActionId=action_id)
    error = error_of(lambda: world.a("DeleteScheduledAction", ScheduledActionId=action_id))
    assert error.code == "ResourceNotFound.ScheduledActionNotFound"
    poll(lambda: world.a("DescribeScheduledActions").TotalCount == 0)


def test_a_clock_jump_over_several_actions_leaves_the_group_as_the_latest_firing_set_it(
    world: World, sandbox: Any
) -> None:
    """The cloud fires each action at its time, so after hours without a look the sizes are those of the action that
    fired last; a jump of the sandbox clock over several actions must end the same way, whatever order they were
    created in (it took the last-created one: a later plan's 11:10 step lost to yesterday's 21:10)."""
    group_id = world.group(world.launch_configuration(), DesiredCapacity=1, MinSize=1)
    world.settle(group_id)
    now = sandbox_now(sandbox)
    morning = (now + timedelta(days=2)).replace(hour=11, minute=10, second=0, microsecond=0)
    end = beijing(morning + timedelta(days=30))
    schedule(world, group_id, "morning", morning, MinSize=3, DesiredCapacity=3, Recurrence="10 11 * * *", EndTime=end)
    evening = morning - timedelta(hours=14)  # 21:10 the day before: created second, fires first
    schedule(world, group_id, "evening", evening, MinSize=1, DesiredCapacity=1, Recurrence="10 21 * * *", EndTime=end)
    advance_to(sandbox, morning)  # one jump over the evening's 21:10, then the morning's 11:10
    group = world.settle(group_id)
    assert (group.MinSize, group.DesiredCapacity, group.InServiceInstanceCount) == (3, 3, 3)
