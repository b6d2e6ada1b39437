"""A tier's capacity schedules in Prefect: the cron schedules (Beijing time) of the deployment
`set-capacity/lunch-peak-<tier>`, each running set-capacity with its own parameters.

Two writers mark theirs by slug and touch only those: the guide's fixed lunch peak (`peak-out`, `peak-in`:
deployments/lunch_peak.py, prefect.yaml) and plan-capacity (`plan-<days>-<HHMM>`:
flows/capacity_plan_steps/prefect_schedules.py). Any other schedule of the deployment is the operator's.
Prefect 3.8.8 updates a deployment's schedules slug by slug when every schedule has a slug (`prefect deploy`, `tcscale
serve`): a redeploy then leaves the plan's and the operator's schedules alone; one schedule without a slug makes it
replace them all.
"""

from __future__ import annotations

from prefect.schedules import Cron

TIMEZONE = "Asia/Shanghai"
FLOW_NAME = "set-capacity"  # flows/set_capacity.py's flow, the deployments' entrypoint flows/entrypoints.py:capacity
DEPLOYMENT_PREFIX = "lunch-peak-"
PEAK_SLUGS = ("peak-out", "peak-in")


def deployment_name(tier: str) -> str:
    """The tier's scheduled set-capacity deployment, as prefect.yaml and `tcscale serve` name it."""
    return f"{DEPLOYMENT_PREFIX}{tier}"


def full_deployment_name(tier: str) -> str:
    return f"{FLOW_NAME}/{deployment_name(tier)}"


def capacity_schedule(
    cron: str, slug: str, tier: str, capacity: str, late_after_minutes: int, active: bool = True, floor: bool = False
) -> Cron:
    """One schedule of the tier's deployment: at `cron` (Beijing time), set-capacity to `capacity` (4, +2, -2),
    with `floor` the group's minimum too; a run starting more than `late_after_minutes` late changes nothing."""
    params: dict[str, object] = {"tier": tier, "capacity": capacity, "late_after_minutes": late_after_minutes}
    if floor:
        params["floor"] = True
    return Cron(cron, timezone=TIMEZONE, active=active, slug=slug, parameters={"params": params})
