"""The generic webhook against a real Prefect server: runs created (tags, key, link), bad input triggering
nothing (checked through the Prefect API), redelivery, busy tiers, plan -> apply, results posted back, audit."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.states import Cancelled, Completed, Running

from chatops.settings import ChatopsConfigError
from chatops.signing import sign_generic
from devstack.prefect_server import PrefectServer
from tests.chatops.support import (
    SECRET,
    Bridge,
    ensure_deployments,
    flow_runs,
    prefect,
    receiver,
    run_async,
    settings_for,
)


@pytest.fixture(scope="module")
def server(prefect_server: PrefectServer) -> PrefectServer:
    ensure_deployments(prefect_server)
    return prefect_server


@pytest.fixture
def bridge(server: PrefectServer, tmp_path: Path) -> Any:
    with Bridge(server, settings_for(tmp_path)) as running:
        yield running


def mid() -> str:
    return uuid.uuid4().hex[:12]


def chat_runs(server: PrefectServer) -> int:
    return len(flow_runs(server, tags=["chat"]))


def set_state(server: PrefectServer, run_id: str, state: Any) -> None:
    async def go() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(uuid.UUID(run_id), state, force=True)

    with prefect(server):
        run_async(go())


def test_a_command_creates_the_deployment_run_with_key_tags_and_link(bridge: Bridge, server: PrefectServer) -> None:
    message = mid()
    answer = bridge.say("scale session 2", message).json()
    run_id = answer["run_id"]
    assert answer["run_url"] == f"{server.ui_url}/runs/flow-run/{run_id}"
    assert run_id in answer["run_url"] and "started" in answer["text"]
    (run,) = flow_runs(server, key=f"chat:generic:{message}")
    assert str(run.id) == run_id
    assert run.parameters == {"params": {"count": 2, "dry_run": False}}
    assert {"tcscale", "chat", "chat-user:ops", "chat-room:ops-room", "tier:session"} <= set(run.tags)
    # redelivery: the same answer, nothing new
    before = chat_runs(server)
    assert bridge.say("scale session 2", message).json() == answer
    assert chat_runs(server) == before
    audit = [json.loads(line) for line in bridge.settings.audit_path().read_text().splitlines()]
    assert [a["decision"] for a in audit] == ["started", "redelivery: same answer, nothing new"]
    assert audit[0]["user"] == "ops" and audit[0]["chat"] == "ops-room" and audit[0]["run_id"] == run_id
    assert audit[0]["platform"] == "generic" and audit[0]["text"] == "scale session 2"


def test_bad_input_gets_a_clear_answer_and_triggers_nothing(bridge: Bridge, server: PrefectServer) -> None:
    import httpx

    before = chat_runs(server)
    url = f"{bridge.url}/chat/generic"
    body = json.dumps({"message_id": mid(), "user": "ops", "chat": "ops-room", "text": "scale session 1"}).encode()
    now = int(time.time())
    refused = {
        "unsigned": httpx.post(url, content=body),
        "wrongly signed": httpx.post(url, content=body, headers=sign_generic("not-the-secret", body, now)),
        "tampered": httpx.post(url, content=body + b" ", headers=sign_generic(SECRET, body, now)),
        "stale": httpx.post(url, content=body, headers=sign_generic(SECRET, body, now - 400)),
        "future": httpx.post(url, content=body, headers=sign_generic(SECRET, body, now + 400)),
        "not json": httpx.post(url, content=b"scale", headers=sign_generic(SECRET, b"scale", now)),
    }
    for what, response in refused.items():
        assert response.status_code in (400, 401), what
        assert response.json()["error"], what
    assert refused["unsigned"].json()["error"].startswith("unsigned")
    assert refused["stale"].json()["error"].startswith("stale")
    assert refused["wrongly signed"].json()["error"] == "wrong signature"
    replies = {
        "unknown command": bridge.say("deploy everything", mid()),
        "bad number": bridge.say("scale session 0", mid()),
        "bad number too": bridge.say("set session 1.5", mid()),
        "user not allowed": bridge.say("scale session 1", mid(), user="mallory"),
        "chat not allowed": bridge.say("scale session 1", mid(), chat="random-room"),
        "viewer may only plan": bridge.say("apply deadbeef", mid(), user="viewer", chat="x"),
    }
    for what, response in replies.items():
        assert response.status_code == 200, what
        assert "run_id" not in response.json(), what
    assert "unknown command" in replies["unknown command"].json()["text"]
    assert "bad number" in replies["bad number"].json()["text"]
    assert "may not run `scale`" in replies["user not allowed"].json()["text"]
    assert chat_runs(server) == before
    audit = bridge.settings.audit_path().read_text()
    assert SECRET not in audit and "rejected: wrong signature" in audit and "refused: scale not allowed" in audit


def test_a_generic_id_with_a_platform_prefix_gets_no_rights_of_that_platforms_user(
    bridge: Bridge, server: PrefectServer
) -> None:
    """Issue 14 defect 6(b): the allowlist names WeCom's mycreate and WeCom's chat 218 ("wecom:..."); a generic
    webhook claiming those ids as its own user or chat id is someone else and may run nothing."""
    before = chat_runs(server)
    impostor = bridge.say("scale session 1", mid(), user="wecom:mycreate").json()
    other_room = bridge.say("scale session 1", mid(), chat="wecom:218").json()
    for reply in (impostor, other_room):
        assert "may not run `scale`" in reply["text"] and "run_id" not in reply
    assert chat_runs(server) == before


def test_replayed_signed_request_triggers_nothing_new(bridge: Bridge, server: PrefectServer) -> None:
    import httpx

    body = json.dumps({"message_id": mid(), "user": "ops", "chat": "ops-room", "text": "scale business 1"}).encode()
    headers = sign_generic(SECRET, body, int(time.time()))
    first = httpx.post(f"{bridge.url}/chat/generic", content=body, headers=headers).json()
    before = chat_runs(server)
    again = httpx.post(f"{bridge.url}/chat/generic", content=body, headers=headers).json()
    assert again == first and chat_runs(server) == before


def test_help_lists_only_what_the_user_may_run(bridge: Bridge) -> None:
    guest = bridge.say("help", mid(), user="guest").json()["text"]
    assert "status" in guest and "scale" not in guest and "apply" not in guest
    ops = bridge.say("help", mid()).json()["text"]
    assert all(word in ops for word in ("scale", "set", "plan", "apply", "cleanup", "status"))
    nobody = bridge.say("help", mid(), user="guest", chat="elsewhere").json()["text"]
    assert "may not run any command" in nobody


def test_dangerous_commands_need_plan_then_apply(bridge: Bridge, server: PrefectServer) -> None:
    before = chat_runs(server)
    for text in ("set session -1", "set session 1", "cleanup some-run"):  # no group to read: lowering is possible
        reply = bridge.say(text, mid()).json()
        assert "dangerous" in reply["text"] and f"plan {text}" in reply["text"] and "run_id" not in reply
    # a relative set is planned as the absolute target it means now (test_apply_set.py): unknown here, so no plan
    unknown = bridge.say("plan set session -1", mid()).json()
    assert "cannot plan" in unknown["text"] and "desired capacity cannot be read" in unknown["text"]
    assert chat_runs(server) == before
    with receiver() as posted:
        planned = bridge.say("plan cleanup some-run", mid(), response_url=f"{posted.url}/reply").json()
        plan_id, plan_run = planned["plan_id"], planned["run_id"]
        (run,) = flow_runs(server, key=f"chat:generic:{planned_key(bridge, plan_run)}")
        assert run.parameters == {"params": {"run_key": "some-run", "dry_run": True}}
        assert "dry-run" in run.tags
        early = bridge.say(f"apply {plan_id}", mid()).json()
        assert "not Completed" in early["text"] and "run_id" not in early
        assert bridge.say(f"apply {plan_id}", mid(), user="viewer").json()["text"].startswith("you may not run")
        # the dry run completes, with its report: the result is posted back once, with the report's link
        report = "# cleanup-run some-run\n\n## Plan\n\n- would delete clb-1 (made by some-run)\n"
        with prefect(server):
            run_async(create_report(plan_run, f"cleanup-run-{plan_run}", report))
        set_state(server, plan_run, Completed())
        post = posted.wait_for(lambda p: p["json"].get("run_id") == plan_run)
        assert post["path"] == "/reply" and post["json"]["state"] == "Completed"
        assert "would delete clb-1" in post["json"]["text"] and f"apply {plan_id}" in post["json"]["text"]
        assert post["json"]["report_url"].startswith(f"{server.ui_url}/artifacts/artifact/")
        applied = bridge.say(f"apply {plan_id}", mid()).json()
        (apply_run,) = [r for r in flow_runs(server, tags=["chat"]) if str(r.id) == applied["run_id"]]
        assert apply_run.parameters == {"params": {"run_key": "some-run", "dry_run": False}}
        again = bridge.say(f"apply {plan_id}", mid()).json()
        assert "applied already" in again["text"]
        time.sleep(1.0)  # a few poll rounds: the plan's result is not posted twice
        assert len([p for p in posted.posts if p["json"].get("run_id") == plan_run]) == 1


def test_an_old_plan_is_not_applied(bridge: Bridge, server: PrefectServer) -> None:
    planned = bridge.say("plan scale business 1", mid()).json()
    set_state(server, planned["run_id"], Completed())
    with sqlite3.connect(bridge.settings.database_path()) as db:
        db.execute("UPDATE plans SET created = created - 3600 WHERE plan_id = ?", (planned["plan_id"],))
    reply = bridge.say(f"apply {planned['plan_id']}", mid()).json()
    assert "min old" in reply["text"] and "run_id" not in reply


def test_a_busy_tier_replies_busy_or_queues(server: PrefectServer, tmp_path: Path) -> None:
    with Bridge(server, settings_for(tmp_path)) as bridge:
        first = bridge.say("scale business 1", mid()).json()
        set_state(server, first["run_id"], Running())
        try:
            before = chat_runs(server)
            busy = bridge.say("scale business 2", mid()).json()
            assert busy["text"].startswith("busy:") and first["run_id"] in busy["text"] and "run_id" not in busy
            assert chat_runs(server) == before
            assert "started" in bridge.say("scale session 1", mid()).json()["text"]  # the other tier is free
        finally:
            set_state(server, first["run_id"], Cancelled())
    with Bridge(server, settings_for(tmp_path / "q", busy="queue")) as bridge:
        first = bridge.say("scale business 1", mid()).json()
        set_state(server, first["run_id"], Running())
        try:
            queued = bridge.say("scale business 2", mid()).json()
            assert "queued" in queued["text"] and queued["run_id"]
        finally:
            set_state(server, first["run_id"], Cancelled())


def test_the_bridge_refuses_to_start_without_its_secret(server: PrefectServer, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, signing_secret=None, signing_secret_block=f"missing-{mid()}")
    with pytest.raises(ChatopsConfigError, match="TCSCALE_CHATOPS_SIGNING_SECRET"):
        Bridge(server, settings)


def planned_key(bridge: Bridge, run_id: str) -> str:
    for line in bridge.settings.audit_path().read_text().splitlines():
        record = json.loads(line)
        if record.get("run_id") == run_id:
            return record["message_id"]
    raise AssertionError(f"no audit record of {run_id}")


async def create_report(run_id: str, key: str, markdown: str) -> None:
    async with get_client() as client:
        await client.create_artifact(
            ArtifactCreate(key=key, type="markdown", data=markdown, flow_run_id=uuid.UUID(run_id))
        )


def test_the_signing_secret_can_come_from_a_prefect_secret_block(server: PrefectServer, tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    name, value = f"chat-secret-{mid()}", f"from-a-block-{mid()}"
    with prefect(server):
        Secret(value=value).save(name, overwrite=True)
    with Bridge(server, settings_for(tmp_path, signing_secret=None, signing_secret_block=name)) as bridge:
        assert bridge.say("help", mid(), secret=SECRET).status_code == 401
        assert "commands you may run" in bridge.say("help", mid(), secret=value).json()["text"]
