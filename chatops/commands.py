"""The chat commands: parsing text into pydantic models, and what deployment run each one means.

    scale <session|business> <n>        scale-out-<tier>-tier/<tier>-tier  {"params": {"count": n}}
    set <session|business> <n|+n|-n>    set-capacity/capacity              {"params": {"tier", "capacity"}}
    cleanup <run key>                   cleanup-run/cleanup                {"params": {"run_key"}}
    capacity <session|business>         plan-capacity/plan                 {"params": {"tier"}}
    plan <scale ...|set ...|cleanup ...|capacity ...>  the same run as a dry run; replies a plan id
    apply <plan id>                     the planned run with dry_run false
    status                              the live topology of both tiers (no run)
    help                                the commands this user may run

A command sends only what it means: the flows take every other parameter from the cluster declaration.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

Tier = Literal["session", "business"]
TIERS = ("session", "business")
COMMANDS = ("scale", "set", "cleanup", "capacity", "plan", "apply", "status", "help")
USAGE = {
    "scale": "scale <session|business> <n>: add n servers to the tier",
    "set": "set <session|business> <n|+n|-n>: set the tier's desired capacity (lowering it needs plan -> apply)",
    "cleanup": "cleanup <run key>: remove what a run made (needs plan -> apply)",
    "capacity": "capacity <session|business>: schedule the tier's capacity ahead of the peaks of its last 4 weeks "
    "(needs plan -> apply)",
    "plan": "plan <scale ...|set ...|cleanup ...|capacity ...>: a dry run; replies a plan id",
    "apply": "apply <plan id>: run exactly that plan",
    "status": "status: servers, CLB targets and health, scaling groups and last runs of both tiers",
    "help": "help: the commands you may run",
}


class CommandError(ValueError):
    """Text that is not a command: the message is the chat reply."""


class Scale(BaseModel):
    kind: Literal["scale"] = "scale"
    tier: Tier
    count: int = Field(ge=1, le=100)

    def deployment(self) -> str:
        return f"scale-out-{self.tier}-tier/{self.tier}-tier"

    def parameters(self, dry_run: bool) -> dict[str, Any]:
        return {"params": {"count": self.count, "dry_run": dry_run}}

    def text(self) -> str:
        return f"scale {self.tier} {self.count}"


class SetCapacity(BaseModel):
    kind: Literal["set"] = "set"
    tier: Tier
    capacity: str = Field(pattern=r"^[+-]?\d{1,4}$")

    def deployment(self) -> str:
        return "set-capacity/capacity"

    def parameters(self, dry_run: bool) -> dict[str, Any]:
        return {"params": {"tier": self.tier, "capacity": self.capacity, "dry_run": dry_run}}

    def text(self) -> str:
        return f"set {self.tier} {self.capacity}"

    def target(self, current: int) -> int:
        return current + int(self.capacity) if self.capacity[0] in "+-" else int(self.capacity)


class Cleanup(BaseModel):
    kind: Literal["cleanup"] = "cleanup"
    run_key: str = Field(pattern=r"^[a-z0-9-]{1,36}$")
    tier: None = None

    def deployment(self) -> str:
        return "cleanup-run/cleanup"

    def parameters(self, dry_run: bool) -> dict[str, Any]:
        return {"params": {"run_key": self.run_key, "dry_run": dry_run}}

    def text(self) -> str:
        return f"cleanup {self.run_key}"


class PlanCapacity(BaseModel):
    kind: Literal["capacity"] = "capacity"
    tier: Tier

    def deployment(self) -> str:
        return "plan-capacity/plan"

    def parameters(self, dry_run: bool) -> dict[str, Any]:
        return {"params": {"tier": self.tier, "dry_run": dry_run}}

    def text(self) -> str:
        return f"capacity {self.tier}"


RunCommand = Annotated[Scale | SetCapacity | Cleanup | PlanCapacity, Field(discriminator="kind")]


class Plan(BaseModel):
    kind: Literal["plan"] = "plan"
    command: RunCommand


class Apply(BaseModel):
    kind: Literal["apply"] = "apply"
    plan_id: str = Field(pattern=r"^[a-z0-9]{4,32}$")


class Status(BaseModel):
    kind: Literal["status"] = "status"


class Help(BaseModel):
    kind: Literal["help"] = "help"


Command = Scale | SetCapacity | Cleanup | PlanCapacity | Plan | Apply | Status | Help


def _run_command(words: list[str]) -> Scale | SetCapacity | Cleanup | PlanCapacity:
    verb, args = words[0], words[1:]
    if verb in ("scale", "set"):
        if len(args) != 2:
            raise CommandError(f"usage: {USAGE[verb]}")
        tier, number = args
        if tier not in TIERS:
            raise CommandError(f"unknown tier {tier!r}: session or business")
        if verb == "scale":
            if not number.isdigit() or not 1 <= int(number) <= 100:
                raise CommandError(f"bad number {number!r}: scale takes a whole number of servers from 1 to 100")
            return Scale(tier=tier, count=int(number))  # type: ignore[arg-type]
        try:
            return SetCapacity(tier=tier, capacity=number)  # type: ignore[arg-type]
        except ValidationError:
            raise CommandError(f"bad number {number!r}: set takes n, +n or -n (at most 4 digits)") from None
    if verb == "capacity":
        if len(args) != 1:
            raise CommandError(f"usage: {USAGE['capacity']}")
        if args[0] not in TIERS:
            raise CommandError(f"unknown tier {args[0]!r}: session or business")
        return PlanCapacity(tier=args[0])  # type: ignore[arg-type]
    if verb == "cleanup":
        if len(args) != 1:
            raise CommandError(f"usage: {USAGE['cleanup']}")
        try:
            return Cleanup(run_key=args[0])
        except ValidationError:
            raise CommandError(f"bad run key {args[0]!r}: lowercase letters, digits and '-', 1 to 36") from None
    raise CommandError(f"unknown command {verb!r}; `help` lists the commands you may run")


def parse(text: str) -> Command:
    """The command in a chat message (a leading @mention or '/' is ignored); `CommandError` otherwise."""
    words = text.strip().split()
    while words and words[0].startswith("@"):
        words = words[1:]
    if not words:
        raise CommandError("empty message; `help` lists the commands you may run")
    words[0] = words[0].lstrip("/").lower()
    verb, args = words[0], words[1:]
    if verb in ("status", "help"):
        if args:
            raise CommandError(f"usage: {USAGE[verb]}")
        return Status() if verb == "status" else Help()
    if verb == "plan":
        if not args or args[0].lower() not in ("scale", "set", "cleanup", "capacity"):
            raise CommandError(f"usage: {USAGE['plan']}")
        return Plan(command=_run_command([args[0].lower(), *args[1:]]))
    if verb == "apply":
        if len(args) != 1:
            raise CommandError(f"usage: {USAGE['apply']}")
        try:
            return Apply(plan_id=args[0].lower())
        except ValidationError:
            raise CommandError(f"bad plan id {args[0]!r}") from None
    return _run_command(words)
