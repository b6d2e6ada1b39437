"""The guide's steps 1 and 2: make an image of the tier's server, then create servers from the image."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.parameters import TierParameters
from flows.scale_out_steps.preflight import TierPlan, server_name
from flows.shared.tier_run import TierRun
from tasks import cvm


def image_name(run: TierRun[TierParameters]) -> str:
    return run.params.image.name or f"tcscale-{run.tier}-{run.key[:8]}"


def image_server(run: TierRun[TierParameters], plan: TierPlan) -> cvm.Image:
    """制作镜像: image the source (or adopt this run's image from an earlier attempt, or reuse one by name)."""
    source, name, timeouts = plan.source, image_name(run), run.params.timeouts
    with run.step(f"image {source.instance_id} as {name!r}"):
        run.ledger.add(
            f"image {name!r} of this run",
            lambda: cvm.delete_tagged_images(run.region, run.tags, timeouts.undo, timeouts.poll),
            f"delete the private images tagged tcscale:run={run.key}, tcscale:tier={run.tier} in the CVM console",
        )
        image = cvm.create_image(source, name, run.tags, run.params.image.reuse)
        run.record.add("image", image.image_id, created=not image.reused, detail=name)
        return cvm.wait_image_normal(run.region, image, timeouts.image, timeouts.poll)


def launch_servers(run: TierRun[TierParameters], plan: TierPlan, image: cvm.Image) -> list[cvm.Server]:
    """基于镜像创建服务器: `count` servers from the image, placed, networked and logged in like the source."""
    count, timeouts = run.params.count, run.params.timeouts
    with run.step(f"launch {count} x {plan.instance_type} from {image.image_id}"):
        run.ledger.add(
            f"{run.tier} servers launched by this run",
            lambda: cvm.terminate_tagged(run.region, run.tags, timeouts.undo, timeouts.poll),
            f"terminate the servers tagged tcscale:run={run.key}, tcscale:tier={run.tier} in the CVM console",
        )
        ids = cvm.run_servers(
            plan.source,
            image.image_id,
            count,
            plan.instance_type,
            server_name(run.tier, run.key),
            run.tags,
            run.client_token("servers"),
        )
        for instance_id in ids:
            run.record.add("instance", instance_id, created=True, detail=f"{run.tier} server from {image.image_id}")
        return cvm.wait_servers_running(run.region, ids, timeouts.launch, timeouts.poll)


@task(name="image-and-launch", cache_policy=NO_CACHE)
def servers_from_image(run: TierRun[TierParameters], plan: TierPlan) -> tuple[cvm.Image, list[cvm.Server]]:
    """Steps 1 and 2 as one branch of the run (`.submit`), so that the CLB and its listener are made meanwhile:
    they need only the VPC, not the image."""
    image = image_server(run, plan)
    return image, launch_servers(run, plan, image)
