"""Launch configurations (Auto Scaling, 2018-04-19): found by name, created carrying the run's tags, deleted by
those tags unless a scaling group still uses one.

CreateLaunchConfiguration takes no ClientToken: a create finds its launch configuration by name first (a retry, or a
re-run, adopts it). Every write is a Prefect task retried on retryable codes only (`tasks.cloud.retrying`).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.autoscaling import api_tags, groups_using, paged, tag_filters
from tasks.autoscaling_models import LaunchConfiguration
from tasks.cloud import call_json, clients_for, retrying


def find_launch_configuration(region: str, name: str) -> LaunchConfiguration | None:
    filters = [{"Name": "launch-configuration-name", "Values": [name]}]
    found = paged(region, "DescribeLaunchConfigurations", {"Filters": filters}, "LaunchConfigurationSet")
    return next((LaunchConfiguration.from_api(i) for i in found if i["LaunchConfigurationName"] == name), None)


def describe_launch_configuration(region: str, lc_id: str) -> LaunchConfiguration | None:
    answer = call_json(
        clients_for(region).autoscaling, "DescribeLaunchConfigurations", {"LaunchConfigurationIds": [lc_id]}
    )
    found = answer.get("LaunchConfigurationSet") or []
    return LaunchConfiguration.from_api(found[0]) if found else None


def tagged_launch_configurations(region: str, tags: dict[str, str]) -> list[LaunchConfiguration]:
    """The launch configurations carrying every one of `tags` (a run's marks), each value matching exactly."""
    request = {"Filters": tag_filters(tags)}
    found = paged(region, "DescribeLaunchConfigurations", request, "LaunchConfigurationSet")
    return [lc for lc in (LaunchConfiguration.from_api(i) for i in found) if lc.carries(tags)]


@task(name="create-launch-configuration", cache_policy=NO_CACHE)
@retrying()
def create_launch_configuration(
    region: str, name: str, request: dict[str, Any], tags: dict[str, str]
) -> tuple[LaunchConfiguration, bool]:
    """Find by name, else create it carrying `tags`: (the launch configuration, created now). Whose it is, is in
    its tags: a lost answer's retry finds the run's own by name."""
    found = find_launch_configuration(region, name)
    if found is not None:
        return found, False
    body = {**request, "LaunchConfigurationName": name, "Tags": api_tags(tags)}
    lc_id = call_json(clients_for(region).autoscaling, "CreateLaunchConfiguration", body)["LaunchConfigurationId"]
    created = describe_launch_configuration(region, lc_id)
    return created or LaunchConfiguration(
        launch_configuration_id=lc_id,
        name=name,
        image_id=request["ImageId"],
        instance_type=request["InstanceType"],
        tags=tags,
    ), True


@task(name="delete-launch-configuration", cache_policy=NO_CACHE)
@retrying()
def delete_launch_configuration(region: str, lc_id: str) -> bool:
    if describe_launch_configuration(region, lc_id) is None:
        return False
    call_json(clients_for(region).autoscaling, "DeleteLaunchConfiguration", {"LaunchConfigurationId": lc_id})
    return True


@task(name="delete-tagged-launch-configurations", cache_policy=NO_CACHE)
def delete_tagged_launch_configurations(region: str, tags: dict[str, str]) -> list[str]:
    """Delete the launch configurations carrying `tags` (a run's own, whatever became of its create's answer);
    one a scaling group still uses is left, and named in the error after the others are deleted."""
    deleted, in_use = [], []
    for lc in tagged_launch_configurations(region, tags):
        users = groups_using(region, lc.launch_configuration_id)
        if users:
            in_use.append(f"{lc.launch_configuration_id} ({lc.name}) is used by {', '.join(g.group_id for g in users)}")
        elif delete_launch_configuration.fn(region, lc.launch_configuration_id):
            deleted.append(lc.launch_configuration_id)
    if in_use:
        raise RuntimeError(
            f"launch configuration(s) {'; '.join(in_use)}: point the scaling group(s) at another launch "
            "configuration, then delete it"
        )
    return deleted
