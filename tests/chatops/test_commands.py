"""Commands, the allowlist and the settings, without a server."""

import json
from pathlib import Path

import pytest

from chatops.bridge import help_text
from chatops.commands import (
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
from chatops.policy import load_allowlist
from chatops.settings import ChatopsConfigError, ChatopsSettings


def test_commands_parse_into_models_with_their_deployment_and_parameters() -> None:
    scale = parse("scale session 2")
    assert scale == Scale(tier="session", count=2)
    assert scale.deployment() == "scale-out-session-tier/session-tier"
    assert scale.parameters(False) == {"params": {"count": 2, "dry_run": False}}
    assert parse("@tcscale /SET business -1") == SetCapacity(tier="business", capacity="-1")
    assert parse("set business +2").parameters(True) == {
        "params": {"tier": "business", "capacity": "+2", "dry_run": True}
    }
    assert parse("set session 4").deployment() == "set-capacity/capacity"
    assert parse("cleanup 0b5e-run").parameters(False) == {"params": {"run_key": "0b5e-run", "dry_run": False}}
    assert parse("plan set session -1") == Plan(command=SetCapacity(tier="session", capacity="-1"))
    assert parse("plan cleanup abc") == Plan(command=Cleanup(run_key="abc"))
    capacity = parse("plan capacity business")
    assert capacity == Plan(command=PlanCapacity(tier="business"))
    assert capacity.command.deployment() == "plan-capacity/plan"
    assert capacity.command.parameters(True) == {"params": {"tier": "business", "dry_run": True}}
    assert parse("apply 1a2b3c4d") == Apply(plan_id="1a2b3c4d")
    assert parse("status") == Status() and parse("help") == Help()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("deploy everything", "unknown command"),
        ("scale web 2", "unknown tier"),
        ("scale session 0", "bad number"),
        ("scale session 101", "bad number"),
        ("scale session two", "bad number"),
        ("scale session -2", "bad number"),
        ("scale session 2.5", "bad number"),
        ("set session 12345", "bad number"),
        ("set session ++1", "bad number"),
        ("set session", "usage"),
        ("cleanup ../etc", "bad run key"),
        ("capacity web", "unknown tier"),
        ("capacity", "usage"),
        ("plan status", "usage"),
        ("plan apply x", "usage"),
        ("apply", "usage"),
        ("apply ../x", "bad plan id"),
        ("status now", "usage"),
    ],
)
def test_bad_commands_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        parse(text)


def test_the_allowlist_is_deny_by_default_and_help_lists_only_what_is_allowed(tmp_path: Path) -> None:
    empty = load_allowlist(ChatopsSettings(state_dir=tmp_path))
    assert empty.allowed("generic", "ops", "ops-room") == []
    assert "may not run any command" in help_text([])
    rules = {
        "rules": [
            {"users": ["ops"], "chats": ["ops-room"], "commands": ["*"]},
            {"users": ["*"], "chats": ["ops-room"], "commands": ["status", "help"]},
            {"users": ["wecom:li"], "chats": ["*"], "commands": ["plan", "help"]},
        ]
    }
    path = tmp_path / "allow.yaml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    allowlist = load_allowlist(ChatopsSettings(allowlist_file=path))
    assert allowlist.allowed("generic", "ops", "ops-room") == [
        "scale", "set", "cleanup", "capacity", "plan", "apply", "status", "help"
    ]  # fmt: skip
    assert allowlist.allowed("generic", "ops", "elsewhere") == []
    assert allowlist.allowed("generic", "guest", "ops-room") == ["status", "help"]
    assert allowlist.allowed("wecom", "li", "1000002") == ["plan", "help"]
    assert allowlist.allowed("generic", "li", "1000002") == []
    text = help_text(allowlist.allowed("generic", "guest", "ops-room"))
    assert "status" in text and "scale" not in text and "apply" not in text
    bad = ChatopsSettings(allowlist=json.dumps({"rules": [{"users": ["x"], "chats": ["y"], "commands": ["rm"]}]}))
    with pytest.raises(ChatopsConfigError, match="unknown commands: rm"):
        load_allowlist(bad)


def test_the_bridge_refuses_to_start_with_a_secret_unset_and_never_shows_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCSCALE_CHATOPS_PLATFORMS", "generic,wecom")
    monkeypatch.setenv("TCSCALE_CHATOPS_WECOM_TOKEN", "tok-QDG6eK")
    monkeypatch.setenv("TCSCALE_CHATOPS_SIGNING_SECRET_BLOCK", "")
    settings = ChatopsSettings()
    assert settings.platforms == ["generic", "wecom"]
    with pytest.raises(ChatopsConfigError) as error:
        settings.resolve_secrets()
    message = str(error.value)
    for name in ("SIGNING_SECRET", "WECOM_AES_KEY", "WECOM_CORP_SECRET", "WECOM_CORP_ID", "WECOM_AGENT_ID"):
        assert f"TCSCALE_CHATOPS_{name}" in message
    assert "WECOM_TOKEN " not in message and "tok-QDG6eK" not in message and "tok-QDG6eK" not in repr(settings)
    with pytest.raises(ValueError, match="message_ttl"):
        ChatopsSettings(message_ttl=60)  # ids are remembered at least 10 minutes


def test_tcscale_chatops_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "TCSCALE_CHATOPS_"))}
    env["PREFECT_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "from cli.main import app; app()", "chatops"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "PREFECT_API_URL" in done.stderr
