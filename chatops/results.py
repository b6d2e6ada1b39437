"""Results posted back: the bridge polls the Prefect API for the runs it made that reached a final state and
posts each one's state, a summary of its report and the report's link, once (recorded in the store)."""

from __future__ import annotations

import asyncio
import logging

from prefect.client.schemas.objects import FlowRun

from chatops import runs
from chatops.replies import ReplyError, WeComSender, post_json, post_robot_markdown
from chatops.settings import ChatopsSettings
from chatops.store import RunRow, Store

log = logging.getLogger("tcscale.chatops")


def summary(markdown: str, limit: int = 600) -> str:
    """The report's headline and plan/messages: its first lines that are not tables."""
    lines = [line.strip() for line in markdown.splitlines()]
    kept = [line for line in lines if line and not line.startswith("|")][:8]
    text = "\n".join(kept)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def result_message(row: RunRow, run: FlowRun, ui_url: str | None) -> dict[str, str | None]:
    state = run.state.name if run.state else "?"
    url = runs.run_url(run.id, ui_url)
    lines = [f"`{row.command}` ({run.name}) finished: {state}" + (f": {run.state.message}" if run.state and
             run.state.message else ""), url]  # fmt: skip
    report_url = None
    found = await runs.reports(row.run_id)
    for artifact in found:
        if isinstance(artifact.data, str):
            lines.append(summary(artifact.data))
    if found:
        report_url = runs.artifact_url(found[-1].id, ui_url)
        lines.append(f"report: {report_url}")
    if row.plan_id and run.state is not None and run.state.is_completed() and "dry-run" in run.tags:
        lines.append(f"to run exactly this plan: `apply {row.plan_id}`")
    return {"text": "\n".join(lines), "run_id": row.run_id, "run_url": url, "state": state, "report_url": report_url}


class ResultPoster:
    def __init__(self, settings: ChatopsSettings, store: Store, wecom: WeComSender | None) -> None:
        self.settings, self.store, self.wecom = settings, store, wecom

    async def post(self, row: RunRow, message: dict[str, str | None]) -> None:
        if row.platform == "wecom":
            if self.wecom is None or not row.reply_to:
                raise ReplyError("no WeCom sender configured")
            await self.wecom.send_text(row.reply_to, message["text"] or "")
            return
        if row.platform == "wecom-robot":  # the message's response_url; without one there is nowhere to post
            if row.reply_to:
                await post_robot_markdown(row.reply_to, message["text"] or "")
            return
        url = row.reply_to or self.settings.reply_url
        if url:
            await post_json(url, {k: v for k, v in message.items() if v is not None})

    async def once(self) -> int:
        """One pass: post every finished, unposted run; the number posted."""
        rows = {r.run_id: r for r in self.store.unposted()}
        posted = 0
        for run in await runs.read_runs(list(rows)):
            row = rows[str(run.id)]
            if run.state is None or run.state.type not in runs.FINAL:
                continue
            try:
                await self.post(row, await result_message(row, run, self.settings.ui_url))
            except ReplyError as error:
                self.store.mark_attempt(row.run_id)
                log.warning("posting the result of run %s failed: %s", row.run_id, error)
                continue
            self.store.mark_posted(row.run_id, run.state.name)
            posted += 1
        return posted

    async def forever(self) -> None:
        while True:
            try:
                await self.once()
            except Exception as error:  # the Prefect API away for a moment: try again next round
                log.warning("looking for finished runs failed: %s", type(error).__name__)
            await asyncio.sleep(self.settings.poll_seconds)
