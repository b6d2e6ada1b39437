"""What the bridge does with one verified chat message: dedupe, parse, check the allowlist, refuse dangerous
changes without plan -> apply, refuse (or queue) a busy tier, create the deployment run, audit, answer."""

from __future__ import annotations

import time
import uuid

import anyio
from pydantic import BaseModel, Field

from chatops import runs, status
from chatops.commands import (
    USAGE,
    Apply,
    Cleanup,
    CommandError,
    Help,
    Plan,
    PlanCapacity,
    Scale,
    SetCapacity,
    Status,
    parse,
)
from chatops.policy import Allowlist
from chatops.settings import ChatopsSettings
from chatops.store import PENDING, Audit, PlanRow, RunRow, Store

RunCommand = Scale | SetCapacity | Cleanup | PlanCapacity
MAX_TEXT = 2000  # characters of a chat message; a command is a few words


class ChatMessage(BaseModel):
    """A verified message, whatever the platform."""

    platform: str
    message_id: str = Field(min_length=1, max_length=128)
    user: str = Field(min_length=1, max_length=128)
    chat: str = Field(min_length=1, max_length=128)
    text: str = Field(max_length=MAX_TEXT)
    reply_to: str | None = Field(None, description="generic: response_url; WeCom: the user id")
    client: str | None = Field(None, description="the caller's address, for the audit")


class Reply(BaseModel):
    text: str
    run_id: str | None = None
    run_url: str | None = None
    plan_id: str | None = None
    decision: str = Field("answered", exclude=True)

    def answer(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


def help_text(allowed: list[str]) -> str:
    if not allowed:
        return "you may not run any command here (ask an operator to add you to the chatops allowlist)"
    return "commands you may run:\n" + "\n".join(f"- {USAGE[c]}" for c in allowed)


class Bridge:
    def __init__(self, settings: ChatopsSettings, allowlist: Allowlist, store: Store, audit: Audit) -> None:
        self.settings, self.allowlist, self.store, self.audit = settings, allowlist, store, audit

    async def handle(self, msg: ChatMessage) -> Reply:
        seen = self.store.remember(msg.platform, msg.message_id)
        if seen is not None:
            reply = (
                Reply(text="this message is being handled already", decision="redelivery while handled")
                if seen == PENDING
                else Reply.model_validate({**seen, "decision": "redelivery: same answer, nothing new"})  # type: ignore[dict-item]
            )
            self._audit(msg, reply)
            return reply
        try:
            reply = await self._decide(msg)
        except BaseException:
            self.store.forget(msg.platform, msg.message_id)
            raise
        self.store.answer(msg.platform, msg.message_id, reply.answer())
        self._audit(msg, reply)
        return reply

    def _audit(self, msg: ChatMessage, reply: Reply) -> None:
        self.audit.write(
            platform=msg.platform, chat=msg.chat, user=msg.user, client=msg.client, message_id=msg.message_id,
            text=msg.text, decision=reply.decision, run_id=reply.run_id, plan_id=reply.plan_id,
        )  # fmt: skip

    async def _decide(self, msg: ChatMessage) -> Reply:
        try:
            command = parse(msg.text)
        except CommandError as error:
            return Reply(text=str(error), decision="refused: not a command")
        allowed = self.allowlist.allowed(msg.platform, msg.user, msg.chat)
        if isinstance(command, Help):
            return Reply(text=help_text(allowed), decision="help")
        if command.kind not in allowed:
            return Reply(text=f"you may not run `{command.kind}` here; `help` lists what you may run",
                         decision=f"refused: {command.kind} not allowed")  # fmt: skip
        try:
            if isinstance(command, Status):
                return await self._status()
            if isinstance(command, Plan):
                return await self._plan(msg, command.command)
            if isinstance(command, Apply):
                return await self._apply(msg, command, allowed)
            danger = await self._danger(command)
            if danger:
                planned = f"plan {command.text()}"
                return Reply(text=f"`{command.text()}` is dangerous ({danger}): run `{planned}`, check its report, "
                             "then `apply <plan id>`", decision="refused: dangerous without plan")  # fmt: skip
            return await self._start(msg, command, dry_run=False)
        except runs.RunError as error:
            return Reply(text=str(error), decision="failed: run not created")

    async def _desired(self, tier: str) -> int | None:
        return await anyio.to_thread.run_sync(status.current_desired, tier, self.settings.region)

    async def _danger(self, command: RunCommand) -> str | None:
        if isinstance(command, Cleanup):
            return "cleanup removes what the run made"
        if isinstance(command, PlanCapacity):
            return f"it replaces the {command.tier} tier's scheduled capacity"
        if isinstance(command, SetCapacity):
            desired = await self._desired(command.tier)
            if desired is None:
                if command.capacity[0] != "+":
                    return "the tier's current capacity cannot be read, so it may be lowered"
            elif command.target(desired) < desired:
                return f"it lowers the {command.tier} tier below its current {desired} servers"
        return None

    async def _status(self) -> Reply:
        lines = await anyio.to_thread.run_sync(status.topology, self.settings.region)
        lines.append("last runs:")
        for run in await runs.last_runs():
            state = run.state.name if run.state else "?"
            lines.append(f"  {run.name} {state} {runs.run_url(run.id, self.settings.ui_url)}")
        return Reply(text="\n".join(lines), decision="status")

    async def _plan(self, msg: ChatMessage, command: RunCommand) -> Reply:
        """A dry run. A `set` remembers the tier's capacity now (apply refuses if it changes), and a relative one is
        pinned to the absolute target it means now: the dry run, its report and the apply all carry that number."""
        if not isinstance(command, SetCapacity):
            return await self._start(msg, command, dry_run=True)
        desired = await self._desired(command.tier)
        if command.capacity[0] not in "+-":
            return await self._start(msg, command, dry_run=True, desired=desired)
        if desired is None:
            return Reply(text=f"cannot plan `{command.text()}`: the {command.tier} tier's desired capacity cannot be "
                         f"read, so what it would change is unknown; plan an absolute `set {command.tier} <n>`",
                         decision="refused: capacity unknown")  # fmt: skip
        target = max(0, command.target(desired))
        pinned = SetCapacity(tier=command.tier, capacity=str(target))
        note = f" (`{command.text()}` from today's {desired}: {desired} -> {target})"
        return await self._start(msg, pinned, dry_run=True, desired=desired, plan_note=note)

    async def _start(
        self, msg: ChatMessage, command: RunCommand, dry_run: bool, plan: PlanRow | None = None,
        desired: int | None = None, plan_note: str = "",
    ) -> Reply:  # fmt: skip
        note = ""
        if not dry_run and command.tier is not None:
            reason = await runs.busy(command.tier)
            if reason and self.settings.busy == "reply":
                return Reply(text=f"busy: {reason}; try again when it has finished", decision="refused: busy")
            note = f" (queued: {reason})" if reason else ""
        tags = ["tcscale", "chat", f"chat-user:{msg.user}", f"chat-room:{msg.chat}"]
        tags += [f"tier:{command.tier}"] if command.tier is not None else []
        tags += ["dry-run"] if dry_run else []
        parameters = plan.parameters if plan is not None else command.parameters(dry_run)
        if plan is not None:
            parameters = {"params": {**parameters["params"], "dry_run": False}}
        run = await runs.create_run(command.deployment(), parameters, f"chat:{msg.platform}:{msg.message_id}", tags)
        run_id, url = str(run.id), runs.run_url(run.id, self.settings.ui_url)
        plan_id = plan.plan_id if plan is not None else (run_id.replace("-", "")[:8] if dry_run else None)
        self.store.add_run(RunRow(
            run_id=run_id, platform=msg.platform, user=msg.user, chat=msg.chat, reply_to=msg.reply_to,
            command=command.text(), plan_id=plan_id, created=time.time(), attempts=0, posted=None, final_state=None,
        ))  # fmt: skip
        if dry_run:
            self.store.add_plan(PlanRow(
                plan_id=plan_id or "", run_id=run_id, platform=msg.platform, user=msg.user, chat=msg.chat,
                command=command.model_dump(), deployment=command.deployment(), parameters=parameters,
                created=time.time(), desired=desired,
            ))  # fmt: skip
            text = f"plan {plan_id}: dry run of `{command.text()}`{plan_note} is {run.name} {url}; when it " \
                   f"completes, `apply {plan_id}` runs exactly this"  # fmt: skip
            return Reply(text=text, run_id=run_id, run_url=url, plan_id=plan_id, decision="planned")
        what = f"apply {plan.plan_id}: " if plan is not None else ""
        return Reply(text=f"{what}`{command.text()}` started: {run.name} {url}{note}", run_id=run_id, run_url=url,
                     plan_id=plan_id, decision="queued" if note else "started")  # fmt: skip

    async def _apply(self, msg: ChatMessage, command: Apply, allowed: list[str]) -> Reply:
        plan = self.store.plan(command.plan_id)
        if plan is None:
            return Reply(text=f"there is no plan {command.plan_id}", decision="refused: no such plan")
        planned: RunCommand = _run_command_of(plan)
        if planned.kind not in allowed:
            return Reply(text=f"you may not apply plan {plan.plan_id}: you may not run `{planned.kind}` here",
                         decision=f"refused: {planned.kind} not allowed")  # fmt: skip
        if plan.applied_run_id:
            return Reply(text=f"plan {plan.plan_id} was applied already (run {plan.applied_run_id})",
                         run_id=plan.applied_run_id, decision="refused: applied already")  # fmt: skip
        age = time.time() - plan.created
        if age > self.settings.plan_max_age_minutes * 60:
            limit = self.settings.plan_max_age_minutes
            text = f"plan {plan.plan_id} is {age / 60:.0f} min old (at most {limit}): plan again"
            return Reply(text=text, decision="refused: plan too old")
        run = await runs.read_run(plan.run_id)
        state = run.state if run is not None else None
        if state is None or state.type != runs.StateType.COMPLETED:
            return Reply(text=f"plan {plan.plan_id}'s dry run is {state.name if state else 'gone'}, not Completed: "
                         "only a completed plan can be applied", decision="refused: plan not completed")  # fmt: skip
        if isinstance(planned, SetCapacity):
            now = await self._desired(planned.tier)
            if now != plan.desired:  # the plan's report showed a change from plan.desired: not this one
                was, is_ = ("unknown" if v is None else v for v in (plan.desired, now))
                return Reply(text=f"plan {plan.plan_id} is not applied: the {planned.tier} tier's desired capacity "
                             f"was {was} when it was planned and is {is_} now; plan again",
                             decision="refused: capacity changed since the plan")  # fmt: skip
        claim = f"pending-{uuid.uuid4()}"
        if not self.store.mark_applied(plan.plan_id, claim):
            return Reply(text=f"plan {plan.plan_id} was applied already", decision="refused: applied already")
        try:
            reply = await self._start(msg, planned, dry_run=False, plan=plan)
        except BaseException:
            self.store.release_plan(plan.plan_id, claim)
            raise
        if reply.run_id is None:
            self.store.release_plan(plan.plan_id, claim)
        else:
            self.store.set_applied(plan.plan_id, reply.run_id)
        return reply


def _run_command_of(plan: PlanRow) -> RunCommand:
    kinds: dict[str, type[RunCommand]] = {
        "scale": Scale,
        "set": SetCapacity,
        "cleanup": Cleanup,
        "capacity": PlanCapacity,
    }
    return kinds[plan.command["kind"]].model_validate(plan.command)
