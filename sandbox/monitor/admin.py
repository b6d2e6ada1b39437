"""`POST /_sandbox/monitor/history`: give the monitor a past, generated from a traffic profile.

Body:
- `profile`: a preset name of `sandbox.core.traffic_profiles.PRESETS` ("guide-lunch", "shifted-lunch",
  "lunch-and-evening", "quiet-weekends") or a `TrafficProfile` object (the tier's requests/s, its peaks, ...);
- `days` (default 28) of one-minute history ending at `end` (ISO 8601; default: now, sandbox time);
- `seed` (default 0) for the noise; optional `spike`: `{"at", "minutes", "height"}`;
- what served that traffic: `load_balancer_id` (the whole rate, on the CLB and on each of its listeners, split
  evenly between them) and/or `instance_ids` / `auto_scaling_group_id` (the rate split evenly between the
  servers, each with its own type's cores).

The same rules as live traffic turn the rate into metrics (sandbox.monitor.backend). Loading again replaces
what a source had. Answers the sources loaded, the range and the number of minutes.
"""

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from sandbox.core.catalog import INSTANCE_TYPES
from sandbox.core.traffic_profiles import BEIJING, PRESETS, Spike, TrafficProfile, requests_per_second
from sandbox.monitor.backend import MonitorBackend, Source
from sandbox.wire.admin import AdminError, admin_route

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud


class HistoryRequest(BaseModel):
    profile: str | TrafficProfile = "guide-lunch"
    days: int = Field(28, gt=0, le=186)
    end: datetime | None = None
    seed: int = 0
    spike: Spike | None = None
    load_balancer_id: str | None = None
    instance_ids: list[str] = Field(default_factory=list)
    auto_scaling_group_id: str | None = None


def _profile(body: HistoryRequest) -> TrafficProfile:
    profile = body.profile
    if isinstance(profile, str):
        if profile not in PRESETS:
            raise AdminError(400, f"profile must be one of {', '.join(PRESETS)} or a TrafficProfile object")
        profile = PRESETS[profile]
    return profile.model_copy(update={"spike": body.spike}) if body.spike else profile


def _servers(cloud: "Cloud", body: HistoryRequest) -> list[tuple[str, int]]:
    ids = list(body.instance_ids)
    if body.auto_scaling_group_id:
        group = cloud.backends["as"].state.groups.get(body.auto_scaling_group_id)  # type: ignore[attr-defined]
        if group is None:
            raise AdminError(404, f"no scaling group {body.auto_scaling_group_id}")
        ids += [i for i in group.instances if i not in ids]
    servers = []
    for instance_id in ids:
        instance = cloud.backends["cvm"].state.instances.get(instance_id)  # type: ignore[attr-defined]
        if instance is None:
            raise AdminError(404, f"no instance {instance_id}")
        spec = INSTANCE_TYPES.get(instance.instance_type)
        servers.append((instance_id, spec.cpu if spec else 1))
    return servers


@admin_route("POST", "monitor/history")
def load_history(cloud: "Cloud", payload: dict[str, Any]) -> dict[str, Any]:
    body = HistoryRequest.model_validate(payload)
    backend: MonitorBackend = cloud.backends["monitor"]  # type: ignore[assignment]
    servers = _servers(cloud, body)
    balancer_sources: list[Source] = []
    if body.load_balancer_id:
        lb = cloud.backends["clb"].state.load_balancers.get(body.load_balancer_id)  # type: ignore[attr-defined]
        if lb is None:
            raise AdminError(404, f"no load balancer {body.load_balancer_id}")
        balancer_sources = [("lb", lb.load_balancer_id)]
        balancer_sources += [("listener", lb.load_balancer_id, li) for li in lb.listeners]
    if not servers and not balancer_sources:
        raise AdminError(400, "name `load_balancer_id`, `instance_ids` or `auto_scaling_group_id`")
    end = body.end.timestamp() if body.end else cloud.clock.now()
    end_minute = int(end // 60)
    start_minute = end_minute - body.days * 1440
    start = datetime.fromtimestamp(start_minute * 60, BEIJING)
    rates = requests_per_second(_profile(body), start, body.days * 1440, seed=body.seed)
    listeners = max(1, len(balancer_sources) - 1)
    for source in balancer_sources:
        share = 1.0 if source[0] == "lb" else 1.0 / listeners
        backend.load_history(source, start_minute, [r * share for r in rates])
    for instance_id, cores in servers:
        backend.load_history(("cvm", instance_id), start_minute, [r / len(servers) for r in rates], cores)
    return {
        "sources": ["/".join(s) for s in balancer_sources] + [f"cvm/{i}" for i, _ in servers],
        "start": datetime.fromtimestamp(start_minute * 60, BEIJING).isoformat(),
        "end": datetime.fromtimestamp(end_minute * 60, BEIJING).isoformat(),
        "minutes": len(rates),
    }
