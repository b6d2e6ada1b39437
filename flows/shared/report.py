"""What a run leaves behind for a person: a markdown report, a table of servers, progress while it waits.

Everything goes into Prefect artifacts (keys `^[a-z0-9-]*$`), and nothing secret is ever put in them:
the models written here carry ids, addresses, config values and timings, never keys.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, Field

from flows.shared.capacity_chart import CapacityTimeline
from flows.shared.ledger import Undone
from tasks.health import Probe
from tasks.models import Change

# Tencent Cloud console region ids (the console's `rid`), for links in reports.
CONSOLE_REGION_IDS = {"ap-guangzhou": 1, "ap-shanghai": 4, "ap-hongkong": 5, "ap-beijing": 8, "ap-chengdu": 16}


def console_link(kind: str, region: str, resource_id: str) -> str:
    rid = CONSOLE_REGION_IDS.get(region, 1)
    base = "https://console.cloud.tencent.com"
    return {
        "instance": f"{base}/cvm/instance/detail?rid={rid}&id={resource_id}",
        "image": f"{base}/cvm/image/index?rid={rid}&imageType=PRIVATE_IMAGE&keyword={resource_id}",
        "clb": f"{base}/clb/detail?rid={rid}&id={resource_id}",
        "listener": f"{base}/clb/detail?rid={rid}&id={resource_id.split('/')[0]}&tab=listener",
        "security-group": f"{base}/vpc/securitygroup/detail/{resource_id}?rid={rid}",
    }.get(kind, base)


class Resource(BaseModel):
    kind: str
    id: str
    detail: str = ""
    created: bool = Field(description="made by this run (False: existed, adopted or reused)")


class StepRecord(BaseModel):
    name: str
    seconds: float = 0.0
    outcome: str = "running"


class RunRecord:
    """The record of one flow run: steps with timings, resources, config changes, health results."""

    def __init__(self, flow: str, tier: str, region: str, run_key: str, dry_run: bool, steps: int) -> None:
        self.flow, self.tier, self.region, self.run_key, self.dry_run = flow, tier, region, run_key, dry_run
        self.steps: list[StepRecord] = []
        self.resources: list[Resource] = []
        self.changes: list[Change] = []
        self.probes: list[Probe] = []
        self.plan: list[str] = []
        self.servers: list[dict[str, Any]] = []
        self.undone: list[Undone] = []
        self.capacity = CapacityTimeline(title=f"{tier} tier capacity")  # drawn when a flow sampled it
        self.total_steps = steps
        self.started = time.monotonic()
        self._progress: UUID | None = None
        self._progress_lock = threading.Lock()  # a run's branches (`.submit`) finish steps at once

    @property
    def key(self) -> str:
        return f"{self.flow}-{self.run_key}"[:200]

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        record = StepRecord(name=name)
        self.steps.append(record)
        get_run_logger().info("step %d/%d: %s", len(self.steps), self.total_steps, name)
        start = time.monotonic()
        try:
            yield record
        except BaseException:
            record.outcome = "failed"
            raise
        else:
            if record.outcome == "running":
                record.outcome = "ok"
        finally:
            record.seconds = time.monotonic() - start
            self._update_progress()

    def _update_progress(self, finished: str | None = None) -> None:
        done = 100.0 * sum(s.outcome != "running" for s in self.steps) / max(self.total_steps, 1)
        description = f"{self.flow}: {self.steps[-1].name} ({self.steps[-1].outcome})" if self.steps else self.flow
        if finished is not None:  # a run may skip a step (no other business server): the end is the end
            done, description = 100.0, f"{self.flow}: {finished}"
        with self._progress_lock:
            if self._progress is None:
                self._progress = create_progress_artifact(done, key=f"{self.key}-progress", description=description)
            else:
                update_progress_artifact(self._progress, min(done, 100.0), description=description)

    def add(self, kind: str, resource_id: str, created: bool, detail: str = "") -> None:
        self.resources.append(Resource(kind=kind, id=resource_id, created=created, detail=detail))

    def markdown(self, outcome: str) -> str:
        lines = [
            f"# {self.flow} ({'plan' if self.dry_run else outcome})",
            "",
            f"Tier **{self.tier}**, region `{self.region}`, run key `{self.run_key}`, "
            f"{time.monotonic() - self.started:.1f} s in all.",
            "",
        ]
        if self.plan:
            lines += ["## Plan", "", *[f"- {item}" for item in self.plan], ""]
        if self.capacity.samples:
            lines += ["## Capacity in time", "", *self.capacity.markdown(), ""]
        if self.resources:
            lines += ["## Resources", "", "| kind | id | made by this run | detail |", "|---|---|---|---|"]
            for r in self.resources:
                link = f"[{r.id}]({console_link(r.kind, self.region, r.id)})"
                lines.append(f"| {r.kind} | {link} | {'yes' if r.created else 'no'} | {r.detail} |")
            lines.append("")
        if self.changes:
            lines += ["## Configuration changes", "", "| server | file | key | before | after | applied |"]
            lines.append("|---|---|---|---|---|---|")
            for c in self.changes:
                lines.append(
                    f"| {c.instance_id or c.host} | `{c.path}` | `{c.key}` | `{c.before}` | `{c.after}` | "
                    f"{'yes' if c.applied else ('unchanged' if not c.changed else 'planned')} |"
                )
            lines.append("")
        if self.probes:
            lines += ["## Verification", "", "| target | result | detail | ms |", "|---|---|---|---|"]
            for p in self.probes:
                lines.append(f"| {p.target} | {'ok' if p.ok else 'FAILED'} | {p.detail} | {p.elapsed_ms:.0f} |")
            lines.append("")
        if self.undone:
            failed = sum(u.outcome == "FAILED" for u in self.undone)
            lines += [
                "## Undone",
                "",
                "Everything this run changed, undone newest first"
                + (f": **{failed} could not be undone, fix them by hand**" if failed else "")
                + ".",
                "",
                "| change | undo | detail | fix by hand |",
                "|---|---|---|---|",
            ]
            lines += [f"| {u.what} | {u.outcome} | {u.detail} | {u.fix} |" for u in self.undone]
            lines.append("")
        lines += ["## Steps", "", "| step | outcome | seconds |", "|---|---|---|"]
        lines += [f"| {s.name} | {s.outcome} | {s.seconds:.2f} |" for s in self.steps]
        return "\n".join(lines) + "\n"

    def publish(self, outcome: str) -> str:
        """Write the report and the server table as artifacts; return the markdown."""
        if self.capacity.samples:
            self.capacity.read_cpu(self.region)  # one Cloud Monitor read per report, for the chart's CPU line
        text = self.markdown(outcome)
        if outcome != "failed":
            self._update_progress(outcome)
        create_markdown_artifact(text, key=self.key, description=f"{self.flow} report ({outcome})")
        if self.servers:
            create_table_artifact(self.servers, key=f"{self.key}-servers", description=f"{self.tier} tier servers")
        return text
