"""The WeCom group robot's callback (企业微信 智能机器人, API mode) at `/chat/wecom-robot`.

    GET   URL verification: msg_signature = sha1(sorted(token, timestamp, nonce, echostr)); answers the
          decrypted echostr as plain text.
    POST  body {"encrypt": ...}, signed in the query like the app callback (msg_signature, timestamp, nonce).
          The plaintext is JSON: a message {"msgid", "aibotid", "chatid"? (groups), "chattype", "from": {"userid"},
          "response_url", "msgtype": "text", "text": {"content": "@robot scale session 1"}}, or a stream refresh
          {"msgtype": "stream", "stream": {"id"}, ...} while an answer is unfinished.
          The answer is WXBizJsonMsgCrypt's encrypted JSON {"encrypt", "msgsignature", "timestamp", "nonce"}
          around a stream message {"msgtype": "stream", "stream": {"id", "finish", "content"}}: finished when
          the bridge answered within `wecom_reply_seconds`, else unfinished and WeCom's refreshes fetch the rest.

A run's result goes to the message's response_url later (results.py; WeCom takes one post per response_url, within
1 h). The robot is a platform of its own ("wecom-robot"): its users and chats are `wecom-robot:<id>` in the
allowlist; a single chat (no chatid) is the chat `single:<userid>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chatops.bridge import Bridge, ChatMessage, Reply
from chatops.inbound import client_of, read_body, refuse, unusable
from chatops.settings import ChatopsConfigError, ChatopsSettings, Secrets
from chatops.signing import SignatureError, WeComCrypto, check_timestamp
from chatops.store import Audit

PLATFORM = "wecom-robot"
STREAM_MINUTES = 6  # WeCom refreshes an unfinished stream for at most 6 min after the user's message
WORKING = "received; working on it…"


class RobotEnvelope(BaseModel):
    encrypt: str = Field(min_length=1)


class RobotSender(BaseModel):
    userid: str = ""


class RobotText(BaseModel):
    content: str = ""


class RobotStreamRef(BaseModel):
    id: str = ""


class RobotMessage(BaseModel):
    """A decrypted callback (fields the bridge uses; WeCom's others are ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    msgid: str = ""
    aibotid: str = ""
    chatid: str | None = None
    chattype: str = "single"
    sender: RobotSender = Field(default_factory=RobotSender, alias="from")
    response_url: str | None = None
    msgtype: str = ""
    text: RobotText | None = None
    stream: RobotStreamRef | None = None


def stream_id(msgid: str) -> str:
    """One stream per message: a redelivery of the message finds the same stream."""
    return hashlib.sha256(msgid.encode()).hexdigest()[:32]


class RobotCallback:
    def __init__(
        self, settings: ChatopsSettings, secrets: Secrets, bridge: Bridge, audit: Audit, clock: Callable[[], float]
    ) -> None:
        assert secrets.wecom_robot_token and secrets.wecom_robot_aes_key  # resolve_secrets checked
        try:
            self.crypto = WeComCrypto(
                secrets.wecom_robot_token.get_secret_value(), secrets.wecom_robot_aes_key.get_secret_value(),
                settings.wecom_robot_receive_id, receiver="robot receive id",
            )  # fmt: skip
        except ValueError:  # never the key itself in the message
            raise ChatopsConfigError("the WeCom robot's EncodingAESKey is not 43 characters of base64") from None
        self.settings, self.bridge, self.audit, self.clock = settings, bridge, audit, clock
        self.streams: dict[str, tuple[asyncio.Future[Reply], float]] = {}  # answers WeCom's refreshes fetch

    def routes(self) -> list[Route]:
        return [Route("/chat/wecom-robot", self.verify_url, methods=["GET"]),
                Route("/chat/wecom-robot", self.message, methods=["POST"])]  # fmt: skip

    async def verify_url(self, request: Request) -> Response:
        query = request.query_params
        try:
            check_timestamp(query.get("timestamp"), self.settings.timestamp_window, self.clock())
            echostr = query.get("echostr")
            if not echostr:
                raise SignatureError(400, "echostr is missing")
            self.crypto.verify(query.get("msg_signature"), query["timestamp"], query.get("nonce"), echostr)
            return PlainTextResponse(self.crypto.decrypt(echostr))
        except SignatureError as error:
            return refuse(self.audit, request, PLATFORM, error)

    async def message(self, request: Request) -> Response:
        query = request.query_params
        try:
            robot = await self._authentic(request)
        except SignatureError as error:
            return refuse(self.audit, request, PLATFORM, error)
        nonce = query.get("nonce") or ""
        if robot.msgtype == "stream":  # WeCom fetching the rest of an unfinished answer
            return self._refresh(robot.stream.id if robot.stream else "", nonce)
        user, client = robot.sender.userid, client_of(request)
        chat = robot.chatid or f"single:{user}"
        if robot.msgtype != "text":  # events (enter_chat...) get the empty reply; media a hint
            self.audit.write(platform=PLATFORM, chat=chat, user=user, client=client, message_id=robot.msgid,
                             decision=f"ignored: msgtype {robot.msgtype}")  # fmt: skip
            if robot.msgtype == "event":
                return Response(status_code=200)
            return self._stream(stream_id(robot.msgid), "only text commands are understood here", True, nonce)
        content = robot.text.content if robot.text else ""
        try:
            message = ChatMessage(platform=PLATFORM, message_id=robot.msgid, user=user, chat=chat, text=content,
                                  reply_to=robot.response_url, client=client)  # fmt: skip
        except ValidationError as error:  # authentic but unusable: a reply saying why (HTTP 200: no retry)
            decision, text = unusable(error, content, "msgid")
            self.audit.write(platform=PLATFORM, chat=chat, user=user, client=client, message_id=robot.msgid,
                             text=content[:200], decision=f"refused: {decision}")  # fmt: skip
            return self._stream(stream_id(robot.msgid), text, True, nonce)
        sid = stream_id(robot.msgid)
        if sid in self.streams:  # WeCom redelivered a message still in hand: the same stream
            return self._refresh(sid, nonce)
        task = asyncio.ensure_future(self.bridge.handle(message))
        done, _ = await asyncio.wait({task}, timeout=self.settings.wecom_reply_seconds)
        if task in done:
            return self._stream(sid, task.result().text, True, nonce)
        self.streams[sid] = (task, time.monotonic())
        return self._stream(sid, WORKING, False, nonce)

    async def _authentic(self, request: Request) -> RobotMessage:
        """The verified, decrypted message for our robot; `SignatureError` (nothing run) otherwise."""
        query = request.query_params
        body = await read_body(request)  # before any signature work
        check_timestamp(query.get("timestamp"), self.settings.timestamp_window, self.clock())
        try:
            envelope = RobotEnvelope.model_validate_json(body)
        except ValidationError:
            raise SignatureError(400, 'the body is not the robot\'s JSON envelope {"encrypt": ...}') from None
        self.crypto.verify(query.get("msg_signature"), query["timestamp"], query.get("nonce"), envelope.encrypt)
        try:
            robot = RobotMessage.model_validate_json(self.crypto.decrypt(envelope.encrypt))
        except ValidationError:
            raise SignatureError(400, "the decrypted message is not the robot's JSON") from None
        if robot.aibotid != self.settings.wecom_robot_id:
            raise SignatureError(403, f"the message is for another robot: aibotid {robot.aibotid[:64]!r}")
        url = robot.response_url
        if url is not None and not url.startswith(self.settings.wecom_robot_response_base):
            raise SignatureError(403, "the message's response_url is not WeCom's")
        return robot

    def _refresh(self, sid: str, nonce: str) -> Response:
        """The stream's answer when it is there, else still unfinished."""
        horizon = time.monotonic() - STREAM_MINUTES * 60
        for old in [k for k, (_, started) in self.streams.items() if started < horizon]:
            del self.streams[old]  # WeCom has stopped asking; the bridge's answer stays in its store
        found = self.streams.get(sid)
        if found is None:
            return self._stream(sid, "no answer is pending for this message", True, nonce)
        task = found[0]
        if not task.done():
            return self._stream(sid, WORKING, False, nonce)
        del self.streams[sid]
        if task.cancelled() or task.exception() is not None:
            return self._stream(sid, "the bridge could not handle this message; try again", True, nonce)
        return self._stream(sid, task.result().text, True, nonce)

    def _stream(self, sid: str, content: str, finish: bool, nonce: str) -> Response:
        """The passive reply: a stream message, encrypted in WXBizJsonMsgCrypt's JSON envelope."""
        plain = json.dumps({"msgtype": "stream", "stream": {"id": sid, "finish": finish, "content": content}},
                           ensure_ascii=False)  # fmt: skip
        return JSONResponse(self.crypto.encrypted_json(plain, str(int(self.clock())), nonce))
