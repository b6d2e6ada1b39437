"""Preflight: everything checked before anything is created. A failure names the resource and the fix."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from flows.parameters import LoadBalancerOptions, ServerSelector, TierParameters
from tasks.clb import LoadBalancer, describe_load_balancer, load_balancers_serving, target_health_of
from tasks.cloud import CloudError, call_json, clients_for, is_retryable, retrying
from tasks.cvm import (
    RUN_TAG,
    ImageNameTaken,
    Server,
    adopt_image,
    describe_servers,
    find_images,
    launch_request,
    tag_filters,
)


class PreflightFailed(Exception):
    """One or more problems found before any change; each names the resource and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("preflight failed, nothing was changed:\n- " + "\n- ".join(problems))


class TierPlan(BaseModel):
    source: Server
    instance_type: str
    load_balancer: LoadBalancer | None = Field(None, description="the existing CLB to use; None: create one")
    members: list[Server] = Field(default_factory=list, description="the tier's servers (the source among them)")


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


def choose_source(members: list[Server], healthy: set[str]) -> Server | None:
    """The server to image, among the tier's RUNNING members that can be bound. The rule, in order:
    1. healthy behind the tier's load balancer (when the tier has one): its image is known to serve;
    2. not launched by tcscale (no `tcscale:run` tag): the operator's own server, the original;
    3. the oldest (CreatedTime), then the smallest instance id: the same answer every time.
    """
    candidates = [s for s in members if s.state == "RUNNING" and s.unbindable_reason() is None]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda s: (s.instance_id not in healthy, RUN_TAG in s.tags, s.created_time or "~", s.instance_id),
    )


def check_source(
    params: TierParameters, tier: str, members: list[Server], balancer: LoadBalancer | None, problems: list[str]
) -> Server | None:
    """The server to image, among the tier's (see `choose_source`)."""
    if not members:
        problems.append(
            f"no {tier} server matches {params.source.describe()} in {params.region}: name the tier's servers "
            "by instance id, tag or name"
        )
        return None
    if len(params.source.instance_ids) == 1:
        source = members[0]
        if source.state != "RUNNING":
            problems.append(
                f"the {tier} server {source.instance_id} is {source.state}, not RUNNING: start it before imaging it"
            )
        reason = source.unbindable_reason()
        if reason:
            problems.append(
                f"the {tier} server {source.instance_id} cannot be bound to a load balancer, because {reason}: "
                "renew or un-isolate it first, or name another server"
            )
        return source
    healthy = set()
    if balancer is not None:
        healthy = {i for i, ok in target_health_of(params.region, balancer.load_balancer_id).items() if ok}
    source = choose_source(members, healthy)
    if source is None:
        states = ", ".join(f"{s.instance_id} {s.state}{' (' + r + ')' if (r := s.unbindable_reason()) else ''}"
                           for s in members)  # fmt: skip
        problems.append(
            f"none of the {tier} servers ({params.source.describe()}) is RUNNING and bindable ({states}): "
            "start one, or name a server by instance id"
        )
    return source


def tier_load_balancer(
    params: TierParameters, members: list[Server], expected_type: str, problems: list[str]
) -> LoadBalancer | None:
    """The tier's existing CLB: the one given, else the one its servers are already bound to (a repeat
    scale-out reuses it: never a second CLB), else None (one is created)."""
    if params.load_balancer.load_balancer_id is not None or not members:
        return None
    found = load_balancers_serving(params.region, [s.private_ip for s in members if s.private_ip], expected_type)
    if len(found) > 1:
        ids = ", ".join(lb.load_balancer_id for lb in found)
        problems.append(
            f"the tier's servers are bound to {len(found)} {expected_type} load balancers ({ids}): "
            "name the tier's one in load_balancer.load_balancer_id"
        )
        return None
    return found[0] if found else None


def given_load_balancer(params: LoadBalancerOptions, region: str, problems: list[str]) -> LoadBalancer | None:
    if params.load_balancer_id is None:
        return None
    balancer = describe_load_balancer(region, params.load_balancer_id)
    if balancer is None:
        problems.append(
            f"load balancer {params.load_balancer_id} does not exist in {region}: "
            "give an existing CLB id, or none to create one"
        )
    return balancer


def check_load_balancer(balancer: LoadBalancer, source: Server, expected_type: str, problems: list[str]) -> None:
    """The CLB a run would use serves the tier: its type, VPC and project are the servers'."""
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


def check_launch(
    source: Server, params: TierParameters, instance_type: str, name: str, tags: dict[str, str], problems: list[str]
) -> None:
    """RunInstances with DryRun, the very request the launch will send (the image does not exist yet: the
    source's own stands in): the cloud itself checks quota, type, image, login, bandwidth, tags and placement."""
    request = launch_request(source, source.image_id, params.count, instance_type, name, tags, dry_run=True)
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


def server_name(tier: str, run_key: str) -> str:
    return f"tcscale-{tier}-{run_key[:8]}"


@task(name="preflight", cache_policy=NO_CACHE)
@retrying()  # throttled describes; a PreflightFailed is never retried
def preflight_tier(params: TierParameters, tier: str, lb_type: str, image_name: str, tags: dict[str, str]) -> TierPlan:
    """The cloud side of a tier's preflight; raises `PreflightFailed` listing every problem."""
    problems: list[str] = []
    members = select_servers(params.region, params.source)
    balancer = given_load_balancer(params.load_balancer, params.region, problems) or tier_load_balancer(
        params, members, lb_type, problems
    )
    source = check_source(params, tier, members, balancer, problems)
    if source is None:
        raise PreflightFailed(problems)
    instance_type = params.instance_type or source.instance_type
    if balancer is not None:
        check_load_balancer(balancer, source, lb_type, problems)
    check_launch(source, params, instance_type, server_name(tier, tags[RUN_TAG]), tags, problems)
    check_image_name(source, image_name, params.image.reuse, tags, problems)
    if problems:
        raise PreflightFailed(problems)
    return TierPlan(source=source, instance_type=instance_type, load_balancer=balancer, members=members)
