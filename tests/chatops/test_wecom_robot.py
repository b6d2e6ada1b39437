"""WeCom's group robot (智能机器人) callback against a real Prefect server: the official JSON vector's URL
verification through the route, a command creating a run whose result goes to response_url (a local receiver),
forged / stale / replayed / wrong-robot requests that create no run and are audited, the robot's own identity
namespace, and an answer past the deadline fetched by WeCom's stream refreshes."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.states import Completed

from chatops.signing import WeComCrypto
from chatops.wecom_robot import WORKING, stream_id
from devstack.prefect_server import PrefectServer
from tasks.waiters import wait_until
from tests.chatops.support import Bridge, Receiver, ensure_deployments, flow_runs, receiver, settings_for
from tests.chatops.test_bridge import set_state
from tests.chatops.test_signing import JSON_AES_KEY, JSON_ECHO_PLAIN, JSON_RECEIVE_ID, JSON_TOKEN, JSON_VERIFY
from tests.chatops.test_wecom import Clock

TOKEN = "robot-token-7f3a"
AES_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")  # 43 characters, as WeCom shows one
ROBOT = "aibTcscaleOps01"
CHAT = "wrkOpsGroup01"
CRYPTO = WeComCrypto(TOKEN, AES_KEY, "", receiver="robot receive id")  # an internal robot's receive id is ""
ALLOWLIST = {"rules": [
    {"users": ["wecom-robot:lisi"], "chats": [f"wecom-robot:{CHAT}"], "commands": ["*"]},
    {"users": ["wecom:wangwu"], "chats": ["*"], "commands": ["*"]},  # the app's wangwu, not the robot's
]}  # fmt: skip


@pytest.fixture(scope="module")
def server(prefect_server: PrefectServer) -> PrefectServer:
    ensure_deployments(prefect_server)
    return prefect_server


def robot_settings(tmp_path: Path, api: Receiver, **overrides: Any) -> Any:
    values = {
        "platforms": "wecom-robot", "wecom_robot_token": TOKEN, "wecom_robot_aes_key": AES_KEY,
        "wecom_robot_id": ROBOT, "wecom_robot_response_base": f"{api.url}/cgi-bin/aibot/response",
        "allowlist": json.dumps(ALLOWLIST), **overrides,
    }  # fmt: skip
    return settings_for(tmp_path, **values)


@pytest.fixture
def robot(server: PrefectServer, tmp_path: Path) -> Iterator[tuple[Bridge, Receiver, Clock]]:
    clock = Clock()
    with receiver() as api, Bridge(server, robot_settings(tmp_path, api), clock=clock) as bridge:
        yield bridge, api, clock


def robot_message(text: str, msgid: str, api: Receiver, user: str = "lisi", chatid: str | None = CHAT,
                  aibotid: str = ROBOT, response_url: str | None = None) -> str:  # fmt: skip
    """A decrypted group @mention, as WeCom's docs show it (path/100719)."""
    message: dict[str, Any] = {
        "msgid": msgid, "aibotid": aibotid, "chattype": "group" if chatid else "single", "from": {"userid": user},
        "response_url": response_url or f"{api.url}/cgi-bin/aibot/response?response_code=code-{msgid}",
        "msgtype": "text", "text": {"content": f"@tcscale {text}"},
    }  # fmt: skip
    if chatid:
        message["chatid"] = chatid
    return json.dumps(message)


def signed(plain: str, crypto: WeComCrypto = CRYPTO, signer: WeComCrypto | None = None,
           stamp: int | None = None) -> tuple[dict[str, str], bytes]:  # fmt: skip
    """What WeCom sends: the query (msg_signature, timestamp, nonce) and the body {"encrypt": ...}."""
    timestamp, nonce = str(int(time.time()) if stamp is None else stamp), uuid.uuid4().hex[:10]
    encrypt = crypto.encrypt(plain)
    query = {"msg_signature": (signer or crypto).signature(timestamp, nonce, encrypt), "timestamp": timestamp,
             "nonce": nonce}  # fmt: skip
    return query, json.dumps({"encrypt": encrypt}).encode()


def send(bridge: Bridge, request: tuple[dict[str, str], bytes]) -> httpx.Response:
    return httpx.post(f"{bridge.url}/chat/wecom-robot", params=request[0], content=request[1], timeout=30)


def stream(response: httpx.Response) -> dict[str, Any]:
    """The passive reply, verified and decrypted as WeCom does: its stream message."""
    assert response.status_code == 200, response.text
    envelope = response.json()
    CRYPTO.verify(envelope["msgsignature"], envelope["timestamp"], envelope["nonce"], envelope["encrypt"])
    reply = json.loads(CRYPTO.decrypt(envelope["encrypt"]))
    assert reply["msgtype"] == "stream"
    return reply["stream"]


def new_id() -> str:
    return uuid.uuid4().hex


def test_url_verification_with_the_official_json_vector_and_its_timestamp_window(
    server: PrefectServer, tmp_path: Path
) -> None:
    clock = Clock()
    with receiver() as api:
        settings = robot_settings(tmp_path, api, wecom_robot_token=JSON_TOKEN, wecom_robot_aes_key=JSON_AES_KEY,
                                  wecom_robot_receive_id=JSON_RECEIVE_ID)  # fmt: skip
        with Bridge(server, settings, clock=clock) as bridge:
            url = f"{bridge.url}/chat/wecom-robot"
            clock.fixed = float(JSON_VERIFY["timestamp"])
            handshake = httpx.get(url, params=JSON_VERIFY)
            assert handshake.status_code == 200 and handshake.text == JSON_ECHO_PLAIN
            forged = httpx.get(url, params={**JSON_VERIFY, "nonce": "47744684"})
            assert forged.status_code == 401 and forged.json() == {"error": "wrong msg_signature"}
            clock.fixed = None  # the vector is from 2016: with the real clock it is stale
            stale = httpx.get(url, params=JSON_VERIFY)
            assert stale.status_code == 401 and stale.json()["error"].startswith("stale")
    decisions = [json.loads(line)["decision"] for line in settings.audit_path().read_text().splitlines()]
    assert decisions == ["rejected: wrong msg_signature", f"rejected: {stale.json()['error']}"]


def test_a_group_command_creates_a_run_and_its_result_goes_to_response_url(
    robot: tuple[Bridge, Receiver, Clock], server: PrefectServer
) -> None:
    bridge, api, _ = robot
    msgid = new_id()
    answer = stream(send(bridge, signed(robot_message("scale session 1", msgid, api))))
    (run,) = flow_runs(server, key=f"chat:wecom-robot:{msgid}")
    assert answer["finish"] is True and answer["id"] == stream_id(msgid)
    assert str(run.id) in answer["content"] and f"{server.ui_url}/runs/flow-run/{run.id}" in answer["content"]
    assert {"chat", "chat-user:lisi", f"chat-room:{CHAT}", "tier:session"} <= set(run.tags)
    set_state(server, str(run.id), Completed())
    posted = api.wait_for(lambda p: p["path"] == "/cgi-bin/aibot/response")
    assert posted["query"]["response_code"] == [f"code-{msgid}"]
    assert posted["json"]["msgtype"] == "markdown"
    content = posted["json"]["markdown"]["content"]
    assert "Completed" in content and str(run.id) in content and "scale session 1" in content
    audit = [json.loads(line) for line in bridge.settings.audit_path().read_text().splitlines()]
    assert [(a["platform"], a["user"], a["chat"], a["decision"], a["run_id"]) for a in audit] == [
        ("wecom-robot", "lisi", CHAT, "started", str(run.id))
    ]
    assert "code-" not in bridge.settings.audit_path().read_text()  # response_url is a credential of its own


def test_forged_stale_and_wrong_robot_requests_create_no_run_and_are_audited(
    robot: tuple[Bridge, Receiver, Clock], server: PrefectServer
) -> None:
    bridge, api, _ = robot
    before = len(flow_runs(server, tags=["chat"]))
    plain = lambda: robot_message("scale session 1", new_id(), api)  # noqa: E731
    other_key = WeComCrypto(TOKEN, base64.b64encode(bytes(32)).decode().rstrip("="), "")
    refusals = {
        "forged: signed with another token": (
            signed(plain(), signer=WeComCrypto("not-the-token", AES_KEY, "")), 401, "wrong msg_signature"),
        "forged: encrypted with another key": (signed(plain(), crypto=other_key, signer=CRYPTO), 400,
                                               "the message does not decrypt with our EncodingAESKey"),
        "stale": (signed(plain(), stamp=int(time.time()) - 400), 401, "stale request"),
        "from the future": (signed(plain(), stamp=int(time.time()) + 400), 401, "stale request"),
        "another robot (aibotid)": (
            signed(robot_message("scale session 1", new_id(), api, aibotid="aibSomeoneElse")), 403,
            "the message is for another robot: aibotid 'aibSomeoneElse'"),
        "another receive id": (
            signed(plain(), crypto=WeComCrypto(TOKEN, AES_KEY, JSON_RECEIVE_ID)), 403,
            "the message is for another robot receive id"),
        "response_url not WeCom's": (
            signed(robot_message("scale session 1", new_id(), api, response_url="http://127.0.0.1:9/steal")), 403,
            "the message's response_url is not WeCom's"),
        "unsigned": (({}, json.dumps({"encrypt": CRYPTO.encrypt(plain())}).encode()), 401, "missing request timestamp"),
        "not the JSON envelope": (({"timestamp": str(int(time.time()))}, b"<xml/>"), 400, "the body is not"),
    }  # fmt: skip
    for what, (request, status, reason) in refusals.items():
        response = send(bridge, request)
        assert response.status_code == status, (what, response.text)
        assert response.json()["error"].startswith(reason), what
    assert len(flow_runs(server, tags=["chat"])) == before
    audit = [json.loads(line) for line in bridge.settings.audit_path().read_text().splitlines()]
    assert len(audit) == len(refusals) and all(a["decision"].startswith("rejected: ") for a in audit)
    assert {a["platform"] for a in audit} == {"wecom-robot"}
    for secret in (TOKEN, AES_KEY):
        assert secret not in bridge.settings.audit_path().read_text()


def test_a_replayed_request_gets_the_same_answer_and_runs_nothing_new_then_goes_stale(
    robot: tuple[Bridge, Receiver, Clock], server: PrefectServer
) -> None:
    bridge, api, clock = robot
    msgid = new_id()
    request = signed(robot_message("scale business 1", msgid, api))
    first, again = stream(send(bridge, request)), stream(send(bridge, request))
    assert again == first and len(flow_runs(server, key=f"chat:wecom-robot:{msgid}")) == 1
    clock.fixed = float(request[0]["timestamp"]) + 301  # the same bytes once the window has passed
    late = send(bridge, request)
    assert late.status_code == 401 and late.json()["error"].startswith("stale")
    assert len(flow_runs(server, tags=["chat", "chat-user:lisi", "tier:business"])) == 1
    decisions = [json.loads(line)["decision"] for line in bridge.settings.audit_path().read_text().splitlines()]
    assert decisions[0] == "started" and decisions[1] == "redelivery: same answer, nothing new"
    assert decisions[2].startswith("rejected: stale")


def test_the_robot_is_its_own_identity_namespace(robot: tuple[Bridge, Receiver, Clock], server: PrefectServer) -> None:
    """`wecom:wangwu` (the app's wangwu) may run anything anywhere; the robot's wangwu may not; nor may lisi
    outside the allowed group, nor in a single chat (the chat `single:lisi`)."""
    bridge, api, _ = robot
    before = len(flow_runs(server, tags=["chat"]))
    for user, chatid in (("wangwu", CHAT), ("lisi", "wrkOtherGroup"), ("lisi", None)):
        answer = stream(send(bridge, signed(robot_message("scale session 1", new_id(), api, user, chatid))))
        assert answer["finish"] is True and "may not run `scale`" in answer["content"], (user, chatid)
    assert len(flow_runs(server, tags=["chat"])) == before
    audit = [json.loads(line) for line in bridge.settings.audit_path().read_text().splitlines()]
    assert [(a["user"], a["chat"], a["decision"]) for a in audit] == [
        ("wangwu", CHAT, "refused: scale not allowed"), ("lisi", "wrkOtherGroup", "refused: scale not allowed"),
        ("lisi", "single:lisi", "refused: scale not allowed"),
    ]  # fmt: skip


def test_an_answer_past_the_deadline_is_fetched_by_wecoms_stream_refreshes(
    server: PrefectServer, tmp_path: Path
) -> None:
    with receiver() as api, Bridge(server, robot_settings(tmp_path, api, wecom_reply_seconds=0.001)) as bridge:
        msgid = new_id()
        first = stream(send(bridge, signed(robot_message("status", msgid, api))))  # reads the cloud: not in 1 ms
        assert first == {"id": stream_id(msgid), "finish": False, "content": WORKING}

        def refresh() -> dict[str, Any]:
            refresh = {"msgid": new_id(), "aibotid": ROBOT, "chatid": CHAT, "chattype": "group",
                       "from": {"userid": "lisi"}, "msgtype": "stream", "stream": {"id": first["id"]}}  # fmt: skip
            return stream(send(bridge, signed(json.dumps(refresh))))

        final = wait_until(refresh, done=lambda s: s["finish"], failed=lambda _: None, what="the streamed answer",
                           timeout=30, first_delay=0.1, max_delay=0.5)  # fmt: skip
        assert final["id"] == first["id"] and "session tier" in final["content"] and "last runs:" in final["content"]
        assert refresh() == {"id": first["id"], "finish": True, "content": "no answer is pending for this message"}
