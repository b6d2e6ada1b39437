"""The bridge's HTTP service (`tcscale chatops`): an ASGI app with the generic webhook and the WeCom callbacks.

    POST /chat/generic   JSON {"message_id", "user", "chat", "text", "response_url"?}, signed (signing.py);
                         answers JSON {"text", "run_id"?, "run_url"?, "plan_id"?}
    GET  /chat/wecom     WeCom's URL verification: answers the decrypted echostr
    POST /chat/wecom     WeCom's encrypted callback; answers a passive encrypted reply within WeCom's 5 s
    GET/POST /chat/wecom-robot   WeCom's group robot (智能机器人): wecom_robot.py
    GET  /health         {"ok": true}

Signature failures answer 401/403/400 with {"error": reason}; command problems are chat replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable

import uvicorn
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chatops import runs
from chatops.bridge import MAX_TEXT, Bridge, ChatMessage, Reply
from chatops.inbound import read_body, refuse, unusable
from chatops.policy import load_allowlist
from chatops.replies import ReplyError, WeComSender
from chatops.results import ResultPoster, log
from chatops.settings import ChatopsConfigError, ChatopsSettings
from chatops.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    WeComCrypto,
    check_timestamp,
    verify_generic,
)
from chatops.store import Audit, Store
from chatops.wecom_robot import RobotCallback


class GenericRequest(BaseModel):
    message_id: str = Field(min_length=1, max_length=128)
    user: str = Field(min_length=1, max_length=128)
    chat: str = Field(min_length=1, max_length=128)
    text: str = Field(max_length=MAX_TEXT)
    response_url: str | None = Field(None, pattern=r"^https?://")


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def create_app(settings: ChatopsSettings | None = None, clock: Callable[[], float] = time.time) -> Starlette:
    """The bridge; `ChatopsConfigError` (nothing started) when a secret is unset or there is no Prefect server."""
    settings = settings or ChatopsSettings()
    if not PREFECT_API_URL.value():
        raise ChatopsConfigError("set PREFECT_API_URL to the Prefect server the deployments are served on")
    secrets = settings.resolve_secrets()
    allowlist = load_allowlist(settings)
    store = Store(settings.database_path(), settings.message_ttl)
    audit = Audit(settings.audit_path())
    bridge = Bridge(settings, allowlist, store, audit)
    crypto = sender = None
    if "wecom" in settings.platforms:
        assert secrets.wecom_token and secrets.wecom_aes_key and secrets.wecom_corp_secret  # resolve_secrets checked
        corp_id, agent_id = settings.wecom_corp_id or "", settings.wecom_agent_id or 0
        try:
            crypto = WeComCrypto(
                secrets.wecom_token.get_secret_value(), secrets.wecom_aes_key.get_secret_value(), corp_id
            )
        except ValueError:  # never the key itself in the message
            raise ChatopsConfigError("the WeCom EncodingAESKey is not 43 characters of base64") from None
        sender = WeComSender(settings.wecom_api_base, corp_id, secrets.wecom_corp_secret, agent_id)
    poster = ResultPoster(settings, store, sender)

    def refused(request: Request, platform: str, error: SignatureError) -> JSONResponse:
        return refuse(audit, request, platform, error)

    async def generic(request: Request) -> Response:
        try:
            body = await read_body(request)  # before any signature work
            assert secrets.signing_secret is not None
            verify_generic(secrets.signing_secret.get_secret_value(), body, request.headers.get(TIMESTAMP_HEADER),
                           request.headers.get(SIGNATURE_HEADER), settings.timestamp_window, clock())  # fmt: skip
            try:
                data = GenericRequest.model_validate_json(body)
            except ValidationError:
                raise SignatureError(
                    400, "the body must be JSON {message_id, user, chat, text, response_url?}"
                ) from None
        except SignatureError as error:
            return refused(request, "generic", error)
        message = ChatMessage(platform="generic", message_id=data.message_id, user=data.user, chat=data.chat,
                              text=data.text, reply_to=data.response_url,
                              client=request.client.host if request.client else None)  # fmt: skip
        return JSONResponse((await bridge.handle(message)).answer())

    async def wecom_verify(request: Request) -> Response:
        assert crypto is not None
        query = request.query_params
        try:
            check_timestamp(query.get("timestamp"), settings.timestamp_window, clock())
            echostr = query.get("echostr")
            if not echostr:
                raise SignatureError(400, "echostr is missing")
            crypto.verify(query.get("msg_signature"), query["timestamp"], query.get("nonce"), echostr)
            return PlainTextResponse(crypto.decrypt(echostr))
        except SignatureError as error:
            return refused(request, "wecom", error)

    async def wecom_message(request: Request) -> Response:
        assert crypto is not None and sender is not None
        query = request.query_params
        try:
            body = await read_body(request)  # before any signature work
            check_timestamp(query.get("timestamp"), settings.timestamp_window, clock())
            try:
                envelope = ET.fromstring(body)
            except ET.ParseError:
                raise SignatureError(400, "the body is not WeCom's XML envelope") from None
            encrypt = envelope.findtext("Encrypt") or ""
            crypto.verify(query.get("msg_signature"), query["timestamp"], query.get("nonce"), encrypt)
            to_user = envelope.findtext("ToUserName")
            if to_user is not None and to_user != crypto.receive_id:
                raise SignatureError(403, "the message is for another CorpID")
            inner = ET.fromstring(crypto.decrypt(encrypt))
        except SignatureError as error:
            return refused(request, "wecom", error)
        except ET.ParseError:
            return refused(request, "wecom", SignatureError(400, "the decrypted message is not XML"))
        if inner.findtext("MsgType") != "text":
            return PlainTextResponse("success")  # events and media: acknowledged, nothing to do
        user, msg_id, content = (inner.findtext(name) for name in ("FromUserName", "MsgId", "Content"))
        user, content, agent = user or "", content or "", inner.findtext("AgentID")
        client = request.client.host if request.client else None
        try:
            message = ChatMessage(platform="wecom", message_id=msg_id or "", user=user, chat=agent or "app",
                                  text=content, reply_to=user, client=client)  # fmt: skip
        except ValidationError as error:  # authentic but unusable: a reply saying why (WeCom retries a non-answer)
            decision, text = unusable(error, content, "MsgId")
            audit.write(platform="wecom", chat=agent, user=user, client=client,
                        message_id=msg_id, text=content[:200], decision=f"refused: {decision}")  # fmt: skip
            return passive(user, text, query.get("nonce") or "") if user else PlainTextResponse("success")
        task = asyncio.ensure_future(bridge.handle(message))
        done, _ = await asyncio.wait({task}, timeout=settings.wecom_reply_seconds)
        if task in done:
            text = task.result().text
        else:  # past WeCom's deadline: acknowledge now, send the answer through the API when it is there
            task.add_done_callback(lambda t: asyncio.ensure_future(_send_late(sender, user, t)))
            text = "received; the answer follows in a moment"
        return passive(user, text, query.get("nonce") or "")

    def passive(user: str, text: str, nonce: str) -> Response:
        """WeCom's passive reply: a text message to the user, encrypted in its XML envelope."""
        assert crypto is not None
        now = str(int(clock()))
        plain = (f"<xml><ToUserName>{_cdata(user)}</ToUserName><FromUserName>{_cdata(crypto.receive_id)}</FromUserName>"
                 f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>{_cdata(text)}</Content>"
                 "</xml>")  # fmt: skip
        return Response(crypto.encrypted_xml(plain, now, nonce), media_type="application/xml")

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with runs.connected():
            task = asyncio.create_task(poster.forever())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    routes = [Route("/health", health)]
    if "generic" in settings.platforms:
        routes.append(Route("/chat/generic", generic, methods=["POST"]))
    if "wecom" in settings.platforms:
        routes += [Route("/chat/wecom", wecom_verify, methods=["GET"]),
                   Route("/chat/wecom", wecom_message, methods=["POST"])]  # fmt: skip
    if "wecom-robot" in settings.platforms:
        routes += RobotCallback(settings, secrets, bridge, audit, clock).routes()
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.bridge, app.state.poster, app.state.store = bridge, poster, store
    return app


async def _send_late(sender: WeComSender, user: str, task: asyncio.Future[Reply]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    try:
        await sender.send_text(user, task.result().text)
    except ReplyError as error:
        log.warning("sending a late WeCom answer failed: %s", error)


def serve(host: str | None = None, port: int | None = None) -> None:
    """`tcscale chatops`: the bridge on host:port until Ctrl-C."""
    try:
        settings = ChatopsSettings()
    except ValidationError as error:  # the messages without the input values
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]  # a rule over several settings
            for e in error.errors(include_input=False)
        )
        raise ChatopsConfigError(f"TCSCALE_CHATOPS_* settings: {problems}") from None
    app = create_app(settings)
    uvicorn.run(app, host=host or settings.host, port=port if port is not None else settings.port)
