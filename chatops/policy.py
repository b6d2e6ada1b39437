"""Who may run what, from where: a deny-by-default allowlist (Atlantis/Errbot style).

The file (YAML or JSON; or the same as JSON in TCSCALE_CHATOPS_ALLOWLIST) is a list of rules:

    rules:
      - users: [alice, "wecom:bob"]     # an id on any platform, or platform:id; "*" any, "wecom:*" any of WeCom
        chats: [ops-room]               # the same for chats
        commands: [scale, set, plan, apply, status, help]   # "*" every command
      - users: ["*"]
        chats: [ops-room]
        commands: [status, help]

A request may run a command when one rule names its user, its chat and the command. No rule: nothing.
`plan X` needs `plan`; `apply` needs `apply` and the planned command (scale, set or cleanup).

Identities are (platform, id) pairs: "wecom:bob" is WeCom's bob only, never a generic-webhook user whose id is
the text "wecom:bob" (that one is "generic:wecom:bob"). An entry with ':' must start with a platform's name.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from chatops.commands import COMMANDS
from chatops.settings import PLATFORMS, ChatopsConfigError, ChatopsSettings


def identity(entry: str) -> tuple[str, str]:
    """An allowlist entry as a (platform, id) pair; platform "*" for a bare id (the same id on every platform)."""
    platform, sep, rest = entry.partition(":")
    if not sep:
        return "*", entry
    if platform not in PLATFORMS:
        raise ValueError(
            f"allowlist entry {entry!r}: before ':' must be a platform ({', '.join(PLATFORMS)}); a generic-webhook "
            f"id that contains ':' is written with its platform, 'generic:{entry}'"
        )
    return platform, rest


class Rule(BaseModel):
    users: list[str] = Field(min_length=1)
    chats: list[str] = Field(min_length=1)
    commands: list[str] = Field(min_length=1)

    def names(self, who: str, platform: str, value: str) -> bool:
        """Whether an entry names (platform, value): the id is compared whole, never re-split at a ':'."""
        items = self.users if who == "user" else self.chats
        return any(p in ("*", platform) and i in ("*", value) for p, i in map(identity, items))


class Allowlist(BaseModel):
    rules: list[Rule] = Field(default_factory=list)

    def allowed(self, platform: str, user: str, chat: str) -> list[str]:
        """The commands this user may run in this chat, in help order."""
        granted: set[str] = set()
        for rule in self.rules:
            if rule.names("user", platform, user) and rule.names("chat", platform, chat):
                granted |= set(COMMANDS) if "*" in rule.commands else set(rule.commands)
        return [c for c in COMMANDS if c in granted]

    def may(self, platform: str, user: str, chat: str, command: str) -> bool:
        return command in self.allowed(platform, user, chat)


def load_allowlist(settings: ChatopsSettings) -> Allowlist:
    """The allowlist of the settings' file, else of TCSCALE_CHATOPS_ALLOWLIST, else the empty one (deny all)."""
    if settings.allowlist_file is not None:
        try:
            raw = yaml.safe_load(Path(settings.allowlist_file).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ChatopsConfigError(f"allowlist {settings.allowlist_file}: {error}") from None
    elif settings.allowlist:
        try:
            raw = json.loads(settings.allowlist)
        except ValueError as error:
            raise ChatopsConfigError(f"TCSCALE_CHATOPS_ALLOWLIST is not JSON: {error}") from None
    else:
        return Allowlist()
    try:
        allowlist = Allowlist.model_validate(raw or {})
    except ValidationError as error:
        raise ChatopsConfigError(f"the allowlist is not valid: {error}") from None
    for rule in allowlist.rules:
        for entry in rule.users + rule.chats:
            try:
                identity(entry)
            except ValueError as error:
                raise ChatopsConfigError(str(error)) from None
    unknown = {c for r in allowlist.rules for c in r.commands} - {*COMMANDS, "*"}
    if unknown:
        raise ChatopsConfigError(f"the allowlist names unknown commands: {', '.join(sorted(unknown))}")
    return allowlist
