"""The allowlist: identities are (platform, id) pairs, so a generic-webhook id containing ':' never takes another
platform's user's or chat's rights (issue 14 defect 6(b)); entries with an unknown platform prefix are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatops.commands import COMMANDS
from chatops.policy import Allowlist, load_allowlist
from chatops.settings import ChatopsConfigError, ChatopsSettings

RULES = Allowlist.model_validate(
    {
        "rules": [
            {"users": ["alice", "wecom:zhangsan"], "chats": ["ops-room", "wecom:1000002"], "commands": ["*"]},
            {"users": ["generic:wecom:lisi"], "chats": ["*"], "commands": ["status"]},
            {"users": ["wecom:*"], "chats": ["wecom:*"], "commands": ["help"]},
        ]
    }
)


def test_a_prefixed_entry_names_that_platforms_user_only() -> None:
    assert RULES.allowed("wecom", "zhangsan", "1000002") == list(COMMANDS)
    assert RULES.allowed("generic", "zhangsan", "ops-room") == []  # zhangsan of WeCom, not of the generic bot


def test_a_generic_user_or_chat_id_with_a_colon_does_not_impersonate_a_wecom_one() -> None:
    assert RULES.allowed("generic", "wecom:zhangsan", "ops-room") == []
    assert RULES.allowed("generic", "alice", "wecom:1000002") == []
    assert not RULES.may("generic", "wecom:zhangsan", "wecom:1000002", "scale")


def test_a_bare_entry_names_the_id_on_every_platform_and_a_generic_id_with_a_colon_is_named_with_its_prefix() -> None:
    assert RULES.allowed("generic", "alice", "ops-room") == list(COMMANDS)
    assert RULES.allowed("wecom", "alice", "ops-room") == list(COMMANDS)
    assert RULES.allowed("generic", "wecom:lisi", "anywhere") == ["status"]
    assert RULES.allowed("wecom", "lisi", "anywhere") == ["help"]  # WeCom's lisi: only the "wecom:*" rule
    assert RULES.allowed("wecom", "anyone", "1000003") == ["help"]  # "wecom:*": any WeCom user, chat
    assert RULES.allowed("generic", "anyone", "wecom:1000003") == []


def test_an_entry_with_an_unknown_platform_prefix_is_refused(tmp_path: Path) -> None:
    rules = {"rules": [{"users": ["slack:U123"], "chats": ["*"], "commands": ["status"]}]}
    settings = ChatopsSettings(allowlist=json.dumps(rules), state_dir=tmp_path)
    with pytest.raises(ChatopsConfigError, match=r"slack:U123.*generic:slack:U123"):
        load_allowlist(settings)
