"""`/_sandbox/metrics`: the per-server metrics Auto Scaling alarms read, and pins for deterministic tests."""

from typing import TYPE_CHECKING, Any

from sandbox.core.catalog import INSTANCE_TYPES
from sandbox.core.metrics import METRICS
from sandbox.wire.admin import AdminError, admin_route

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud


def _targets(cloud: "Cloud", body: dict[str, Any]) -> list[str]:
    ids = list(body.get("instance_ids") or [])
    group_id = body.get("auto_scaling_group_id")
    if group_id:
        group = cloud.backends["as"].state.groups.get(group_id)  # type: ignore[attr-defined]
        if group is None:
            raise AdminError(404, f"no scaling group {group_id}")
        ids += list(group.instances)
    if not ids:
        raise AdminError(400, "name `instance_ids` or `auto_scaling_group_id`")
    return ids


@admin_route("GET", "metrics")
def get_metrics(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    """Every server's metrics over the last whole minute of sandbox time, and the pinned values."""
    minute = int(cloud.clock.now() // 60) - 1
    servers = {}
    for instance in cloud.backends["cvm"].state.instances.values():  # type: ignore[attr-defined]
        cores = INSTANCE_TYPES[instance.instance_type].cpu if instance.instance_type in INSTANCE_TYPES else 1
        servers[instance.instance_id] = {
            "requests": cloud.metrics.requests(instance.instance_id),
            **{m: round(cloud.metrics.minute(instance.instance_id, m, minute, cores), 3) for m in METRICS},
        }
    pinned = [{"instance_id": i, "metric": m, "value": v} for (i, m), v in cloud.metrics.overrides.items()]
    return {"servers": servers, "overrides": pinned}


@admin_route("POST", "metrics")
def pin_metrics(cloud: "Cloud", body: dict[str, Any]) -> dict[str, Any]:
    """Body: `metric` (CPU_UTILIZATION, LAN_TRAFFIC_OUT, ...), `value` (null unpins), and `instance_ids` and/or
    `auto_scaling_group_id` (its instances now)."""
    metric, value = body.get("metric"), body.get("value")
    if metric not in METRICS:
        raise AdminError(400, f"metric must be one of {', '.join(METRICS)}")
    ids = _targets(cloud, body)
    for instance_id in ids:
        cloud.metrics.override(instance_id, metric, None if value is None else float(value))
    return {"metric": metric, "value": value, "instance_ids": ids}


@admin_route("DELETE", "metrics")
def unpin_metrics(cloud: "Cloud", _: dict[str, Any]) -> dict[str, Any]:
    cloud.metrics.overrides.clear()
    return {"cleared": True}
