"""A run whose process died (a power cut, a killed worker): marked Crashed, then cleaned up, with no hand work.

Prefect's answer for a self-hosted server ("detect zombie flows" in its docs): every run sends a heartbeat event
(`prefect.flow-run.heartbeat`) every `HEARTBEAT_SECONDS`, and an automation marks a run Crashed when, after a
heartbeat, neither another heartbeat nor a final state arrives within `zombie_window()`. Without it a dead run
stays Running for ever (the chat bridge answers "busy" about it). A second automation, on the same silence, starts
`cleanup-run/cleanup` with the dead deployment run's run key: it waits for the tier (the dead run's lock lease
expires within `LEASE_SECONDS`) and removes what the run made, found by its marks.

The second automation watches the silence too, not the Crashed event: after a server restart Prefect holds back
an event that follows one the restarted server never saw (the run's Running state, if under 5 min before) for
15 min (`PRECEDING_EVENT_LOOKBACK`); the test of a power cut showed it. Both are limited to tcscale's flows, by
flow name (the subflows of `scale-out-cluster` carry no tags).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, RunDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from flows.shared.tier_run import CLEANUP_DEPLOYMENT

HEARTBEAT_SECONDS = 60  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY wherever tcscale's runs start (Prefect's minimum: 30)
MISSED_HEARTBEATS = 3  # a run is a zombie after this many heartbeats did not come (a short API outage is not death)
CRASH_ZOMBIES = "tcscale: crash zombie runs"
CLEAN_UP_CRASHED = "tcscale: clean up crashed runs"
FINAL_EVENTS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}
# The flows whose changes cleanup-run finds by their marks: what they make carries the run's tag or name, a desired
# capacity they change (verify-autoscaling's + 1, set-capacity's change) is kept per run key and put back only while
# the group still desires what the run wrote, as their own undo does on a failure, and so are configure-autoscaling's
# changes of a group it did not create (fields put back only while they hold what the run wrote); plan-capacity's
# schedule changes are kept per run key too (flows/capacity_plan_steps/kept.py). Not cleanup-run (idempotent: run it
# again).
CLEANED_UP_FLOWS = (
    "scale-out-cluster",
    "scale-out-session-tier",
    "scale-out-business-tier",
    "configure-autoscaling",
    "verify-autoscaling",
    "set-capacity",
    "plan-capacity",
)
# The run key of the dead run: its `params.run_key` (set-capacity: that of the tier it changes), else its flow run id
# (as `tier_run.run_key` does). Rendered as text: a bare "{{ ... }}" string is rendered as JSON by Prefect, and a flow
# run id is no JSON (the action failed). Undefined names are empty (Prefect's ChainableUndefined).
RUN_KEY_TEMPLATE = {
    "__prefect_kind": "jinja",
    "template": "{% set p = flow_run.parameters.params %}{{ p.run_key or (p[p.tier].run_key if p.tier else '') "
    "or flow_run.id }}",
}


def heartbeat_env(seconds: int = HEARTBEAT_SECONDS) -> dict[str, str]:
    """The environment of a process that starts tcscale's runs (a worker's job variables, `tcscale serve`)."""
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(seconds)}


def zombie_window(heartbeat_seconds: int = HEARTBEAT_SECONDS) -> timedelta:
    return timedelta(seconds=MISSED_HEARTBEATS * heartbeat_seconds + 30)


def tcscale_flows() -> list[str]:
    """The names of the flows prefect.yaml deploys."""
    from deployments.serve import deployment_specs, load_flow

    return sorted({load_flow(spec["entrypoint"]).name for spec in deployment_specs()})


def _of_flows(names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {"prefect.resource.role": "flow", "prefect.resource.name": list(names)}


def silent_runs(flows: list[str] | tuple[str, ...], within: timedelta | None, deployment_runs: bool) -> EventTrigger:
    """A run of one of `flows` (only deployment runs: `deployment_runs`) whose heartbeat was not followed by another
    one or a final state within `within`, once per run."""
    related = [ResourceSpecification(_of_flows(flows))]
    if deployment_runs:
        related.append(ResourceSpecification({"prefect.resource.role": "deployment"}))
    return EventTrigger(
        match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
        match_related=related if deployment_runs else related[0],
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=within or zombie_window(),
    )


def crash_zombies(within: timedelta | None = None, flows: list[str] | None = None) -> AutomationCore:
    """A tcscale run that stopped sending heartbeats (and never reached a final state) is marked Crashed."""
    return AutomationCore(
        name=CRASH_ZOMBIES,
        description="A tcscale flow run whose heartbeats stopped without a final state (its process died: a power "
        "cut, a killed worker) is marked Crashed; 'tcscale: clean up crashed runs' starts its cleanup-run.",
        trigger=silent_runs(flows or tcscale_flows(), within, deployment_runs=False),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name="Crashed",
                message="no heartbeat from this run's process: it died (power cut, killed worker); "
                "'tcscale: clean up crashed runs' starts cleanup-run for it",
            )
        ],
    )


def clean_up_crashed(cleanup_deployment_id: Any, within: timedelta | None = None) -> AutomationCore:
    """The same silence of a tcscale deployment run whose changes carry marks starts `cleanup-run/cleanup` with its
    run key. Only deployment runs: a `tcscale run` in a shell is its operator's, and the subflows of a dead
    `scale-out-cluster` share its run key (its one cleanup removes all)."""
    return AutomationCore(
        name=CLEAN_UP_CRASHED,
        description="A tcscale deployment run whose heartbeats stopped (marked Crashed by 'tcscale: crash zombie "
        "runs') is undone by cleanup-run/cleanup with its run key: it waits for the tier's lock, removes what the run "
        "made, found by its marks, and writes its report.",
        trigger=silent_runs(CLEANED_UP_FLOWS, within, deployment_runs=True),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=cleanup_deployment_id,
                parameters={"params": {"run_key": RUN_KEY_TEMPLATE}},
            )
        ],
    )


def _comparable(automation: AutomationCore) -> dict[str, Any]:
    return automation.model_dump(
        include={"name", "description", "enabled", "trigger", "actions", "actions_on_trigger", "actions_on_resolve"},
        exclude={"trigger": {"id"}},
    )


def ensure_automation(client: Any, wanted: AutomationCore) -> str:
    """Create the automation, or make the one of that name what `wanted` says; one of each name."""
    found = client.read_automations_by_name(wanted.name)
    for extra in found[1:]:
        client.delete_automation(extra.id)
    if not found:
        client.create_automation(wanted)
        return "created"
    if _comparable(found[0]) == _comparable(wanted) and len(found) == 1:
        return "exists"
    client.update_automation(found[0].id, wanted)
    return "updated"


def setup_automations(client: Any) -> list[str]:
    """`tcscale setup`'s lines for the two automations; the cleanup one needs the cleanup deployment."""
    from prefect.exceptions import ObjectNotFound

    lines = [f"automation {CRASH_ZOMBIES!r}: {ensure_automation(client, crash_zombies())}"]
    try:
        cleanup = client.read_deployment_by_name(CLEANUP_DEPLOYMENT)
    except ObjectNotFound:
        lines.append(
            f"automation {CLEAN_UP_CRASHED!r}: skipped (deployment {CLEANUP_DEPLOYMENT} not deployed yet: run setup "
            "again after `prefect deploy --all` or once `tcscale serve` runs)"
        )
        return lines
    lines.append(f"automation {CLEAN_UP_CRASHED!r}: {ensure_automation(client, clean_up_crashed(cleanup.id))}")
    return lines
