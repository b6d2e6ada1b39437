"""Preflight: everything checked before anything is created. A failure names the resource and the fix."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from flows.parameters import LoadBalancerOptions, ServerSelector, TierParameters
from tasks.clb import LoadBalancer, describe_load_balancer
from tasks.cloud import CloudError, call_json, clients_for, is_retryable, retrying
from tasks.cvm import ImageNameTaken, Server, adopt_image, describe_servers, find_images, tag_filters


class PreflightFailed(Exception):
    """One or more problems found before any change; each names the resource and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("preflight failed, nothing was changed:\n- " + "\n- ".join(problems))


class TierPlan(BaseModel):
    source: Server
    instance_type: str
    load_balancer: LoadBalancer | None = Field(None, description="the existing CLB to use; None: create one")
    business_servers: list[Server] = Field(default_factory=list)


def select_servers(region: str, selector: ServerSelector) -> list[Server]:
    if selector.instance_ids:
        return describe_servers(region, selector.instance_ids)
    if selector.tag_key is not None:
        return describe_servers(region, filters=tag_filters({selector.tag_key: selector.tag_value or ""}))
    return describe_servers(region, filters=[{"Name": "instance-name", "Values": [selector.name or ""]}])


def placement_mismatches(source: Server, other: Server, role: str) -> list[str]:
    """The guide, twice: new and existing resources must share region, zone and project."""
    problems = []
    for what, mine, theirs in (
        ("zone", source.zone, other.zone),
        ("project", source.project_id, other.project_id),
        ("VPC", source.vpc_id, other.vpc_id),
    ):
        if mine != theirs:
            problems.append(
                f"{role} {other.instance_id} is in {what} {theirs}, but the source server {source.instance_id} is in "
                f"{what} {mine}: every resource of the cluster must share region, zone and project (the guide's rule); "
                f"choose servers of one {what}"
            )
    return problems


def check_source(params: TierParameters, tier: str, problems: list[str]) -> Server | None:
    found = select_servers(params.region, params.source)
    if len(found) != 1:
        problems.append(
            f"the {tier} server ({params.source.describe()}) matched {len(found)} servers in {params.region}, "
            "expected exactly one: name it by instance id"
            + (f" (found {', '.join(s.instance_id for s in found)})" if found else "")
        )
        return None
    source = found[0]
    if source.state != "RUNNING":
        problems.append(
            f"the {tier} server {source.instance_id} is {source.state}, not RUNNING: start it before imaging it"
        )
    reason = source.unbindable_reason()
    if reason:
        problems.append(
            f"the {tier} server {source.instance_id} cannot be bound to a load balancer, because {reason} "
            "(the console lists only servers not isolated, not expired, with bandwidth > 0): fix that first"
        )
    return source


def check_load_balancer(
    params: LoadBalancerOptions, source: Server, expected_type: str, problems: list[str]
) -> LoadBalancer | None:
    if params.load_balancer_id is None:
        return None
    balancer = describe_load_balancer(source.region, params.load_balancer_id)
    if balancer is None:
        problems.append(
            f"load balancer {params.load_balancer_id} does not exist in {source.region}: "
            "give an existing CLB id, or none to create one"
        )
        return None
    if balancer.type != expected_type:
        problems.append(
            f"load balancer {balancer.load_balancer_id} is {balancer.type}, the {expected_type} one is needed "
            f"({'internal for the session tier' if expected_type == 'INTERNAL' else 'public for the business tier'})"
        )
    if balancer.vpc_id != source.vpc_id:
        problems.append(
            f"load balancer {balancer.load_balancer_id} is in VPC {balancer.vpc_id}, the servers in {source.vpc_id}: "
            "use a CLB of the servers' VPC"
        )
    if balancer.project_id != source.project_id:
        problems.append(
            f"load balancer {balancer.load_balancer_id} is in project {balancer.project_id}, the servers in "
            f"project {source.project_id}: every resource must share the project (the guide's rule)"
        )
    if balancer.status != 1:
        problems.append(f"load balancer {balancer.load_balancer_id} is not ready (Status {balancer.status})")
    return balancer


def check_launch(source: Server, params: TierParameters, instance_type: str, problems: list[str]) -> None:
    """RunInstances with DryRun: the cloud itself checks quota, type, image and placement."""
    request = {
        "Placement": {"Zone": source.zone, "ProjectId": source.project_id},
        "ImageId": source.image_id,
        "InstanceType": instance_type,
        "InstanceCount": params.count,
        "VirtualPrivateCloud": {"VpcId": source.vpc_id, "SubnetId": source.subnet_id},
        "SecurityGroupIds": source.security_group_ids,
        "DryRun": True,
    }
    try:
        call_json(clients_for(source.region).cvm, "RunInstances", request)
    except CloudError as error:
        if is_retryable(error):
            raise  # throttled: the task's retry asks again, it is no finding about the launch
        if error.code != "DryRunOperation":
            problems.append(
                f"launching {params.count} x {instance_type} in {source.zone} would fail: {error.code}: {error.message}"
            )


def check_image_name(source: Server, name: str, reuse: bool, run_tag: dict[str, str], problems: list[str]) -> None:
    try:
        adopt_image(find_images(source.region, name), run_tag, reuse)
    except ImageNameTaken as taken:
        problems.append(str(taken))


@task(name="preflight", cache_policy=NO_CACHE)
@retrying()  # throttled describes; a PreflightFailed is never retried
def preflight_tier(
    params: TierParameters, tier: str, lb_type: str, image_name: str, run_tag: dict[str, str]
) -> TierPlan:
    """The cloud side of a tier's preflight; raises `PreflightFailed` listing every problem."""
    problems: list[str] = []
    source = check_source(params, tier, problems)
    if source is None:
        raise PreflightFailed(problems)
    instance_type = params.instance_type or source.instance_type
    balancer = check_load_balancer(params.load_balancer, source, lb_type, problems)
    check_launch(source, params, instance_type, problems)
    check_image_name(source, image_name, params.image.reuse, run_tag, problems)
    if problems:
        raise PreflightFailed(problems)
    return TierPlan(source=source, instance_type=instance_type, load_balancer=balancer)
