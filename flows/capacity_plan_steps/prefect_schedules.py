"""The plan as the tier's Prefect schedules (`lunch_peak_by: prefect`): one cron schedule per step and day type on
the tier's deployment `set-capacity/lunch-peak-<tier>`, slug `plan-<days>-<HHMM>` (the slug is the mark), each
running set-capacity to the step's servers (absolute, within the group's maximum) with `floor`: desired and minimum,
as the plan's Auto Scaling scheduled actions set them (apply.py), so an alarm's scale-in never takes planned servers.

The fixed lunch peak's schedules of that deployment (`peak-out`, `peak-in`) are paused, as the declaration's
`capacity_plan: forecast` says (`tcscale serve` serves them inactive then; a redeploy from prefect.yaml, which sets
no `active`, leaves them paused). The operator's other schedules are never touched. Every change goes to the run's
undo ledger before it is made, and kept for cleanup-run (kept.py), as apply.py's: a created schedule is undone by
deleting it, a modified or paused one by putting the earlier one back, a deleted one by creating it again, each only
while the schedule still holds what this run wrote (else it is left, and the report says so); the fixed peak is
resumed only by the undo of the run that paused it. Prefect deletes the deployment's future auto-scheduled
runs when a schedule is modified or deleted; its scheduler makes them again from the schedules in place.
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import DeploymentSchedule
from prefect.exceptions import ObjectNotFound

from flows.autoscaling_steps.capacity_schedules import PEAK_SLUGS, capacity_schedule, full_deployment_name
from flows.capacity_plan_steps.history import PlanInputError
from flows.capacity_plan_steps.kept import Dumped, Keeper, PlaceOps, ScheduleChange, restore
from flows.capacity_plan_steps.steps import CapacityStep
from flows.parameters import AutoScalingTierParameters
from flows.shared.tier_run import TierRun

PLAN_PREFIX = "plan-"
CRON_DAYS = {"daily": "*", "weekday": "1-5", "weekend": "0,6"}  # cron's day of week: 0 is Sunday

Schedule = DeploymentSchedule | DeploymentScheduleCreate


def slug(kind: str, step: CapacityStep) -> str:
    return f"{PLAN_PREFIX}{kind}-{step.at().replace(':', '')}"


def wanted_schedules(
    tier: str, plans: dict[str, list[CapacityStep]], late_after_minutes: int
) -> list[DeploymentScheduleCreate]:
    """One schedule per step of each day type's plan: set-capacity to the step's servers at the step's minute."""
    made = []
    for kind, steps in plans.items():
        for step in steps:
            cron = f"{step.minute % 60} {step.minute // 60} * * {CRON_DAYS[kind]}"
            made.append(
                capacity_schedule(cron, slug(kind, step), tier, str(step.servers), late_after_minutes, floor=True)
            )
    return [DeploymentScheduleCreate.from_schedule(s) for s in made]


def shown(schedule: Schedule) -> str:
    capacity = schedule.parameters.get("params", {}).get("capacity", "?")
    when = getattr(schedule.schedule, "cron", str(schedule.schedule))
    zone = getattr(schedule.schedule, "timezone", "")
    return f"set-capacity {capacity} at cron '{when}' {zone}" + ("" if schedule.active else " (paused)")


def _same(have: Schedule, want: Schedule) -> bool:
    return (have.schedule, have.active, have.parameters) == (want.schedule, want.active, want.parameters)


def _as_create(schedule: Schedule) -> DeploymentScheduleCreate:
    return DeploymentScheduleCreate(
        schedule=schedule.schedule, active=schedule.active, parameters=schedule.parameters, slug=schedule.slug
    )


def deployment_schedules(tier: str) -> tuple[UUID | None, list[DeploymentSchedule]]:
    """The tier's deployment's id and schedules; (None, []) when it is not on the Prefect server."""
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(full_deployment_name(tier))
        except ObjectNotFound:
            return None, []
    return deployment.id, deployment.schedules


def missing_deployment(tier: str) -> str:
    return (
        f"no deployment {full_deployment_name(tier)} on the Prefect server, whose schedules the plan is written as "
        "(lunch_peak_by: prefect): deploy it (`prefect deploy --all`, or `tcscale serve`), or declare "
        "`lunch_peak_by: autoscaling`"
    )


def _current(tier: str, wanted_slug: str | None) -> tuple[UUID | None, DeploymentSchedule | None]:
    deployment_id, schedules = deployment_schedules(tier)
    return deployment_id, next((s for s in schedules if s.slug == wanted_slug), None)


def _create(deployment_id: UUID, schedule: DeploymentScheduleCreate) -> None:
    with get_client(sync_client=True) as client:
        client.create_deployment_schedules(deployment_id, [schedule])


def _update(deployment_id: UUID, schedule_id: UUID, to: Schedule) -> None:
    with get_client(sync_client=True) as client:
        client.update_deployment_schedule(
            deployment_id, schedule_id, active=to.active, schedule=to.schedule, parameters=to.parameters
        )


def _delete(deployment_id: UUID, schedule_id: UUID) -> None:
    with get_client(sync_client=True) as client:
        client.delete_deployment_schedule(deployment_id, schedule_id)


def _dumped(schedule: Schedule | None) -> Dumped | None:
    return _as_create(schedule).model_dump(mode="json") if schedule is not None else None


def _now(change: ScheduleChange) -> Dumped | None:
    return _dumped(_current(change.tier, change.name)[1])


def _put(change: ScheduleChange, to: Dumped) -> None:
    deployment_id, there = _current(change.tier, change.name)
    if deployment_id is None:
        raise LookupError(
            f"the deployment {full_deployment_name(change.tier)} is gone: {change.name} cannot be put back"
        )
    wanted = DeploymentScheduleCreate.model_validate(to)
    if there is None:
        _create(deployment_id, wanted)
    else:
        _update(deployment_id, there.id, wanted)


def _remove(change: ScheduleChange) -> None:
    deployment_id, there = _current(change.tier, change.name)
    if deployment_id is not None and there is not None:
        _delete(deployment_id, there.id)


PLACE = PlaceOps(
    now=_now,
    same=lambda a, b: _same(DeploymentScheduleCreate.model_validate(a), DeploymentScheduleCreate.model_validate(b)),
    put=_put,
    delete=_remove,
)


def converge(
    run: TierRun[AutoScalingTierParameters], wanted: list[DeploymentScheduleCreate], pause_peak: bool
) -> list[str]:
    """Create, modify or delete the tier's plan schedules to match `wanted` (pause the fixed peak's when
    `pause_peak`); each change kept for cleanup-run (kept.py) and in the ledger first. Returns the differences (a dry
    run: what would change)."""
    tier, name = run.tier, full_deployment_name(run.tier)
    deployment_id, schedules = deployment_schedules(tier)
    if deployment_id is None and wanted and not run.params.dry_run:
        raise PlanInputError(missing_deployment(tier))
    ours = {s.slug: s for s in schedules if s.slug and s.slug.startswith(PLAN_PREFIX)}
    goal = {s.slug: s for s in wanted}
    if pause_peak:
        for peak in (s for s in schedules if s.slug in PEAK_SLUGS and s.active):
            ours[peak.slug] = peak
            goal[peak.slug] = _as_create(peak).model_copy(update={"active": False})
    differences: list[str] = []
    keeper: list[Keeper] = []  # made at the first change: a run that changes nothing reads no Variable

    def change(what: str, fix: str, key: str, old: Schedule | None, new: Schedule | None) -> None:
        differences.append(what)
        if run.params.dry_run or deployment_id is None:
            return
        keeper[:] = keeper or [Keeper(run.key)]
        kept = keeper[0].keep(
            place="prefect", region=run.region, tier=tier, name=key, what=what, fix=fix,
            before=_dumped(old), written=_dumped(new),
        )  # fmt: skip
        run.ledger.add(what, lambda: restore(kept, PLACE), fix)
        if new is None:
            assert isinstance(old, DeploymentSchedule)
            _delete(deployment_id, old.id)
        elif isinstance(old, DeploymentSchedule):
            _update(deployment_id, old.id, new)
        else:
            _create(deployment_id, _as_create(new))

    for key, want in goal.items():
        old = ours.get(key)
        if old is not None and _same(old, want):
            continue
        if old is None:
            change(f"create Prefect schedule {key} of {name}: {shown(want)}",
                   f"delete the schedule {key} of the deployment {name}", key, None, want)  # fmt: skip
            continue
        change(f"modify Prefect schedule {key} of {name}: {shown(old)} -> {shown(want)}",
               f"set the schedule {key} of the deployment {name} back to {shown(old)}", key, old, want)  # fmt: skip
    for key in sorted(k for k in set(ours) - set(goal) if k):
        old = ours[key]
        change(f"delete Prefect schedule {key} of {name} (no longer in the plan): {shown(old)}",
               f"create the schedule {key} of the deployment {name} again: {shown(old)}", key, old, None)  # fmt: skip
    return differences
