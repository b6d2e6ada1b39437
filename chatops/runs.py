"""The Prefect API side of the bridge: create deployment runs, tell a busy tier, read finished runs and reports.

Every call goes to the server in PREFECT_API_URL (a real server: `tcscale up` / `tcscale serve`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import Artifact, FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from flows.shared.tier_lock import limit_name

FINAL = (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)
ACTIVE = (StateType.PENDING, StateType.RUNNING)
FLOWS = (
    "scale-out-cluster", "scale-out-session-tier", "scale-out-business-tier", "cleanup-run",
    "configure-autoscaling", "verify-autoscaling", "set-capacity", "plan-capacity",
)  # fmt: skip


_shared: PrefectClient | None = None


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[None]:
    """One Prefect client for the bridge's lifetime: a new client costs ~80 ms of CPU (it builds an SSL context),
    most of a chat request's own cost when made per call."""
    global _shared
    async with get_client() as client:
        _shared = client
        try:
            yield
        finally:
            _shared = None


@contextlib.asynccontextmanager
async def prefect() -> AsyncIterator[PrefectClient]:
    """The bridge's client while it runs (`connected`), else one for this call."""
    if _shared is not None:
        yield _shared
        return
    async with get_client() as client:
        yield client


class RunError(Exception):
    """The run could not be created; the message is the chat reply."""


def ui_base(ui_url: str | None = None) -> str:
    base = ui_url or PREFECT_UI_URL.value()
    if not base:
        api = PREFECT_API_URL.value() or ""
        base = api[: -len("/api")] if api.endswith("/api") else api
    return base.rstrip("/")


def run_url(run_id: UUID | str, ui_url: str | None = None) -> str:
    return f"{ui_base(ui_url)}/runs/flow-run/{run_id}"


def artifact_url(artifact_id: UUID | str, ui_url: str | None = None) -> str:
    return f"{ui_base(ui_url)}/artifacts/artifact/{artifact_id}"


async def create_run(deployment: str, parameters: dict[str, Any], idempotency_key: str, tags: list[str]) -> FlowRun:
    """The deployment's run, created at once (not waited for). The same key returns the first run."""
    async with prefect() as client:
        try:
            found = await client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise RunError(
                f"there is no deployment {deployment} on the Prefect server: start `tcscale serve`"
            ) from None
        try:
            return await client.create_flow_run_from_deployment(
                found.id, parameters=parameters, idempotency_key=idempotency_key, tags=tags
            )
        except PrefectHTTPStatusError as error:
            detail = error.response.text[:300] if error.response is not None else str(error)
            raise RunError(f"the Prefect server refused the run of {deployment}: {detail}") from None


async def busy(tier: str) -> str | None:
    """Why the tier is busy (a tcscale run of it Pending or Running, or its lock taken), or None."""
    async with prefect() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["tcscale", f"tier:{tier}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(ACTIVE))),
            ),
            limit=20,
        )
        for run in runs:
            if "dry-run" not in run.tags:  # a dry run takes no lock and changes nothing
                state = run.state.name if run.state else "active"
                return f"run {run.name} ({run.id}) on the {tier} tier is {state}"
        name = limit_name(tier)
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None
        if limit.active_slots >= 1:  # held, whatever the UI made of the limit (tier_lock switches it back on)
            return f"the {tier} tier's lock (concurrency limit {name}) is taken"
    return None


async def read_runs(run_ids: list[str]) -> list[FlowRun]:
    if not run_ids:
        return []
    async with prefect() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in run_ids])), limit=len(run_ids)
        )


async def read_run(run_id: str) -> FlowRun | None:
    async with prefect() as client:
        try:
            return await client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            return None


async def reports(run_id: str) -> list[Artifact]:
    """The run's markdown reports (not its progress bars or tables), oldest first."""
    async with prefect() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]), type=ArtifactFilterType(any_=["markdown"])
            ),
        )
    return sorted(found, key=lambda a: a.created or 0)


async def last_runs(limit: int = 5) -> list[FlowRun]:
    async with prefect() as client:
        return await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOWS))),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=limit,
        )
