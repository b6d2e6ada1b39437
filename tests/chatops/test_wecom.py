"""The WeCom callback against a real Prefect server: the official vector through the routes, encrypted passive
replies, refusals (signature, CorpID, stale) that trigger nothing, and the result sent through WeCom's API."""

from __future__ import annotations

import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.states import Completed

from chatops.signing import WeComCrypto
from devstack.prefect_server import PrefectServer
from tests.chatops.support import (
    ACCESS_TOKEN,
    CORP_SECRET,
    SECRET,
    Bridge,
    Receiver,
    ensure_deployments,
    flow_runs,
    receiver,
    settings_for,
)
from tests.chatops.test_bridge import set_state
from tests.chatops.test_signing import AES_KEY, CORP, ECHO_PLAIN, MESSAGE, REQUEST_BODY, TOKEN, VERIFY

CRYPTO = WeComCrypto(TOKEN, AES_KEY, CORP)


class Clock:
    def __init__(self) -> None:
        self.fixed: float | None = None

    def __call__(self) -> float:
        return time.time() if self.fixed is None else self.fixed


@pytest.fixture(scope="module")
def server(prefect_server: PrefectServer) -> PrefectServer:
    ensure_deployments(prefect_server)
    return prefect_server


@pytest.fixture
def wecom(server: PrefectServer, tmp_path: Path) -> Iterator[tuple[Bridge, Receiver, Clock]]:
    clock = Clock()
    with receiver() as api:
        settings = settings_for(
            tmp_path, platforms="generic,wecom", wecom_token=TOKEN, wecom_aes_key=AES_KEY, wecom_corp_id=CORP,
            wecom_corp_secret=CORP_SECRET, wecom_agent_id=218, wecom_api_base=api.url,
        )  # fmt: skip
        with Bridge(server, settings, clock=clock) as bridge:
            yield bridge, api, clock


def text_message(text: str, msg_id: str | None, user: str = "mycreate", corp: str = CORP) -> str:
    """A decrypted text message (msg_id None: without its MsgId element)."""
    msg = f"<MsgId>{msg_id}</MsgId>" if msg_id is not None else ""
    return (
        f"<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content>{msg}<AgentID>218</AgentID></xml>"
    )


def post(bridge: Bridge, plain: str, crypto: WeComCrypto = CRYPTO, to_user: str = CORP) -> httpx.Response:
    """What WeCom sends: the encrypted message in the XML envelope, signed in the query."""
    stamp, nonce = str(int(time.time())), uuid.uuid4().hex[:10]
    encrypt = crypto.encrypt(plain)
    body = f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    query = {"msg_signature": crypto.signature(stamp, nonce, encrypt), "timestamp": stamp, "nonce": nonce}
    return httpx.post(f"{bridge.url}/chat/wecom", params=query, content=body, timeout=30)


def reply_text(response: httpx.Response) -> str:
    """The passive reply, verified and decrypted as WeCom does."""
    envelope = ET.fromstring(response.text)
    encrypt = envelope.findtext("Encrypt") or ""
    CRYPTO.verify(envelope.findtext("MsgSignature"), envelope.findtext("TimeStamp") or "",
                  envelope.findtext("Nonce"), encrypt)  # fmt: skip
    inner = ET.fromstring(CRYPTO.decrypt(encrypt))
    assert inner.findtext("ToUserName") == "mycreate" and inner.findtext("MsgType") == "text"
    return inner.findtext("Content") or ""


def test_the_official_vector_through_the_routes(wecom: tuple[Bridge, Receiver, Clock]) -> None:
    bridge, _, clock = wecom
    clock.fixed = float(VERIFY["timestamp"])
    handshake = httpx.get(f"{bridge.url}/chat/wecom", params=VERIFY)
    assert handshake.status_code == 200 and handshake.text == ECHO_PLAIN
    clock.fixed = float(MESSAGE["timestamp"])
    answer = httpx.post(f"{bridge.url}/chat/wecom", params=MESSAGE, content=REQUEST_BODY)
    assert answer.status_code == 200
    assert "unknown command 'hello'" in reply_text(answer)  # the vector's user says "hello"
    clock.fixed = None  # the vector is from 2014: with the real clock it is stale
    stale = httpx.get(f"{bridge.url}/chat/wecom", params=VERIFY)
    assert stale.status_code == 401 and stale.json()["error"].startswith("stale")


def test_a_wecom_command_runs_and_its_result_is_sent_through_the_wecom_api(
    wecom: tuple[Bridge, Receiver, Clock], server: PrefectServer
) -> None:
    bridge, api, _ = wecom
    msg_id = str(uuid.uuid4().int)[:19]
    first = post(bridge, text_message("scale session 1", msg_id))
    assert first.status_code == 200
    text = reply_text(first)
    (run,) = flow_runs(server, key=f"chat:wecom:{msg_id}")
    assert str(run.id) in text and f"{server.ui_url}/runs/flow-run/{run.id}" in text
    assert {"chat-user:mycreate", "chat-room:218", "tier:session"} <= set(run.tags)
    again = post(bridge, text_message("scale session 1", msg_id))  # WeCom retries: same answer, no new run
    assert reply_text(again) == text and len(flow_runs(server, key=f"chat:wecom:{msg_id}")) == 1
    set_state(server, str(run.id), Completed())
    sent = api.wait_for(lambda p: p["path"] == "/cgi-bin/message/send")
    assert sent["query"]["access_token"] == [ACCESS_TOKEN]
    assert sent["json"]["touser"] == "mycreate" and sent["json"]["agentid"] == 218
    assert "Completed" in sent["json"]["text"]["content"] and str(run.id) in sent["json"]["text"]["content"]
    assert api.token_requests[0]["corpid"] == [CORP]


def test_wecom_refusals_trigger_nothing(wecom: tuple[Bridge, Receiver, Clock], server: PrefectServer) -> None:
    bridge, _, _ = wecom
    before = len(flow_runs(server, tags=["chat"]))
    plain = text_message("scale session 1", "1234")
    other_corp = WeComCrypto(TOKEN, AES_KEY, "wx0000000000000000")
    other_token = WeComCrypto("not-the-token", AES_KEY, CORP)
    refusals: dict[str, Any] = {
        "other corp inside": (post(bridge, plain, crypto=other_corp, to_user=CORP), 403),
        "other ToUserName": (post(bridge, plain, to_user="wx0000000000000000"), 403),
        "wrong signature": (post(bridge, plain, crypto=other_token), 401),
        "unsigned": (httpx.post(f"{bridge.url}/chat/wecom", content=REQUEST_BODY), 401),
        "not xml": (
            httpx.post(f"{bridge.url}/chat/wecom", params={"timestamp": str(int(time.time()))}, content=b"hello"),
            400,
        ),
    }
    for what, (response, status) in refusals.items():
        assert response.status_code == status, what
        assert response.json()["error"], what
    mallory = post(bridge, text_message("scale session 1", "91011", user="mallory"))
    assert mallory.status_code == 200 and "may not run `scale`" in _decrypt_any(mallory)
    assert len(flow_runs(server, tags=["chat"])) == before
    audit = bridge.settings.audit_path().read_text()
    for secret in (TOKEN, AES_KEY, CORP_SECRET, SECRET, ACCESS_TOKEN):
        assert secret not in audit


def test_a_message_without_msgid_or_over_2000_characters_gets_a_polite_audited_reply_and_runs_nothing(
    wecom: tuple[Bridge, Receiver, Clock], server: PrefectServer
) -> None:
    """Issue 14 defect 6(c): these ended in an unaudited HTTP 500 (and WeCom retries a non-answer three times).
    Now: HTTP 200 with an encrypted passive reply saying why (so WeCom does not retry), an audit line, no run."""
    bridge, _, _ = wecom
    before = len(flow_runs(server, tags=["chat"]))
    no_id = post(bridge, text_message("scale session 1", None))
    assert no_id.status_code == 200, no_id.text
    assert "no MsgId" in reply_text(no_id) and "nothing was run" in reply_text(no_id)
    long_text = "scale session 1" + " " * 2000  # a valid command once stripped: the length alone must refuse it
    too_long = post(bridge, text_message(long_text, "5550001"))
    assert too_long.status_code == 200, too_long.text
    assert "2015 characters" in reply_text(too_long) and "at most 2000" in reply_text(too_long)
    assert len(flow_runs(server, tags=["chat"])) == before
    audit = [json.loads(line) for line in bridge.settings.audit_path().read_text().splitlines()]
    assert [(a["user"], a["decision"]) for a in audit] == [
        ("mycreate", "refused: no MsgId"), ("mycreate", "refused: text over 2000 characters"),
    ]  # fmt: skip
    assert audit[1]["message_id"] == "5550001" and len(audit[1]["text"]) <= 200


def _decrypt_any(response: httpx.Response) -> str:
    envelope = ET.fromstring(response.text)
    return ET.fromstring(CRYPTO.decrypt(envelope.findtext("Encrypt") or "")).findtext("Content") or ""


def test_an_answer_past_wecoms_deadline_is_acknowledged_then_sent_through_the_api(
    server: PrefectServer, tmp_path: Path
) -> None:
    with receiver() as api:
        settings = settings_for(
            tmp_path, platforms="wecom", wecom_token=TOKEN, wecom_aes_key=AES_KEY, wecom_corp_id=CORP,
            wecom_corp_secret=CORP_SECRET, wecom_agent_id=218, wecom_api_base=api.url, wecom_reply_seconds=0.001,
        )  # fmt: skip
        with Bridge(server, settings) as bridge:
            first = post(bridge, text_message("status", "777"))  # reads the cloud in a thread: not within 1 ms
            assert reply_text(first) == "received; the answer follows in a moment"
            sent = api.wait_for(lambda p: p["path"] == "/cgi-bin/message/send")
            assert "session tier" in sent["json"]["text"]["content"] and "last runs:" in sent["json"]["text"]["content"]
            assert httpx.post(f"{bridge.url}/chat/generic", content=b"{}").status_code == 404  # generic not enabled
