"""`cleanup-run` undoes a `configure-autoscaling` run by its key: the scaling groups tagged with it, their launch
configurations, scheduled actions, alarm policies and launched servers go; the tier's servers are detached,
unprotected and bound to their CLB again. The scale-out's resources (another key) stay.
"""

from __future__ import annotations

from typing import Any

from flows.configure_autoscaling import configure_autoscaling
from flows.scale_out import scale_out_cluster
from sandbox.server import EmbeddedSandbox
from tasks import autoscaling as asg
from tasks import autoscaling_policies, cvm
from tasks.autoscaling_launch_configurations import describe_launch_configuration
from tasks.cvm import RUN_TAG
from tests.flows.autoscaling_support import autoscaling_params, cleanup_autoscaling
from tests.flows.support import cluster_params, inventory
from tests.sdk import poll

KEY = "killed-autoscaling-1"


def cleanup(guide: dict[str, Any], dry_run: bool = False) -> Any:
    return cleanup_autoscaling(guide, KEY, dry_run)


def test_cleanup_undoes_configure_autoscaling(guide: dict[str, Any], cloud_env: EmbeddedSandbox) -> None:
    region = guide["region"]
    session, business = scale_out_cluster(cluster_params(guide, count=1))
    scale_key = business.run_key
    assert scale_key != KEY
    before = inventory(cloud_env)  # the scaled cluster: two servers per tier behind its CLB

    params = autoscaling_params(guide)
    params.run_key, params.tiers = KEY, ["business"]  # one tier: the test stays short; the other is left alone
    outcomes = configure_autoscaling(params)
    groups = {o.tier: o.group_id or "" for o in outcomes}
    lcs = sorted(o.launch_configuration_id or "" for o in outcomes)
    attached = {
        tier: sorted(m.instance_id for m in asg.members(region, gid) if m.creation_type == "MANUAL_ATTACHING")
        for tier, gid in groups.items()
    }
    assert all(len(ids) == 2 for ids in attached.values()), attached
    # a server the group launched itself, as the lunch peak or an alarm would
    gid = groups["business"]
    asg.modify_desired.fn(region, gid, 3)
    poll(
        lambda: asg.describe_group(region, gid),
        done=lambda g: g is not None and g.settled and g.desired == 3,
        what=f"{gid} settled at 3",
        timeout=60,
    )
    launched = [m.instance_id for m in asg.members(region, gid) if m.creation_type != "MANUAL_ATTACHING"]
    assert len(launched) == 1
    schedules = sorted(
        f"{g}/{a.name}" for g in groups.values() for a in autoscaling_policies.scheduled_actions(region, g)
    )
    policies = sorted(f"{g}/{p.name}" for g in groups.values() for p in autoscaling_policies.alarm_policies(region, g))
    assert schedules and policies
    configured = inventory(cloud_env)
    assert configured != before

    planned = cleanup(guide, dry_run=True)
    assert inventory(cloud_env) == configured, "a dry run removed something"
    assert all(asg.describe_group(region, g) for g in groups.values())
    assert sorted(g.split(" ")[0] for g in planned.scaling_groups) == sorted(groups.values())
    assert sorted(planned.launch_configurations) == lcs
    assert sorted(planned.scheduled_actions) == schedules and sorted(planned.alarm_policies) == policies
    assert planned.group_servers == launched
    assert sorted(planned.servers_detached) == sorted(f"{groups[t]}: {', '.join(ids)}" for t, ids in attached.items())
    assert "scaling groups deleted" in planned.markdown()

    removed = cleanup(guide)
    assert not removed.failed
    assert removed.model_dump(exclude={"dry_run"}) == planned.model_dump(exclude={"dry_run"})
    for g in groups.values():
        assert asg.describe_group(region, g) is None
        assert (
            autoscaling_policies.scheduled_actions(region, g) == []
            and autoscaling_policies.alarm_policies(region, g) == []
        )
    assert all(describe_launch_configuration(region, lc) is None for lc in lcs)
    tier_servers = [i for ids in attached.values() for i in ids]
    assert asg.membership_of(region, tier_servers) == {}, "the tier's servers are still in a group"
    # the launched server terminated, the configure run's image deleted, the tier's servers bound to their CLB
    # again at their port, the scale-out's image, servers and CLBs (another key) untouched
    assert inventory(cloud_env) == before, "cleanup left something behind, or removed the scale-out's resources"
    assert cvm.tagged_images(region, {RUN_TAG: KEY}) == []
    assert cvm.tagged_images(region, {RUN_TAG: scale_key}) and cvm.tagged_servers(region, {RUN_TAG: scale_key})
    assert session.load_balancer_id and business.load_balancer_id

    again = cleanup(guide)
    assert not (again.scaling_groups or again.launch_configurations or again.scheduled_actions)
    assert not (again.alarm_policies or again.servers_detached or again.group_servers or again.images)
    assert inventory(cloud_env) == before
