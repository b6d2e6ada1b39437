"""Helpers of the chatops tests: the bridge on a free port, a local receiver for replies (generic response_url
and WeCom's API), the deployments the bridge runs, and reading flow runs through the Prefect API."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import uvicorn
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from chatops.app import create_app
from chatops.settings import ChatopsSettings
from chatops.signing import sign_generic
from devstack.prefect_server import PrefectServer, free_port
from tasks.waiters import wait_until

SECRET = "test-signing-secret-0123456789"
CORP_SECRET = "test-corp-secret-abcdef"
ACCESS_TOKEN = "test-access-token-xyz"
ALLOWLIST = {
    "rules": [
        {"users": ["ops", "wecom:mycreate"], "chats": ["ops-room", "wecom:218"], "commands": ["*"]},
        {"users": ["*"], "chats": ["ops-room"], "commands": ["status", "help"]},
        {"users": ["viewer"], "chats": ["*"], "commands": ["help", "plan"]},
    ]
}
# the deployments chat commands create runs of: flow name -> (module, function) for the parameter schema
DEPLOYMENTS = {  # the deployments' flows (prefect.yaml): their run forms are the schemas
    "scale-out-session-tier/session-tier": ("flows.entrypoints", "session_tier"),
    "scale-out-business-tier/business-tier": ("flows.entrypoints", "business_tier"),
    "set-capacity/capacity": ("flows.entrypoints", "capacity"),
    "cleanup-run/cleanup": ("flows.entrypoints", "cleanup"),
}


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


def prefect(server: PrefectServer) -> Any:
    return temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_UI_URL: server.ui_url})


def ensure_deployments(server: PrefectServer) -> None:
    """The deployments with the real flows' parameter schemas (the server validates what the bridge sends)."""
    import importlib

    async def create() -> None:
        async with get_client() as client:
            for full, (module, function) in DEPLOYMENTS.items():
                flow_name, name = full.split("/")
                flow = getattr(importlib.import_module(module), function)
                flow_id = await client.create_flow_from_name(flow_name)
                await client.create_deployment(
                    flow_id, name, parameter_openapi_schema=flow.parameters.model_dump_for_openapi(),
                    enforce_parameter_schema=True,
                )  # fmt: skip

    with prefect(server):
        run_async(create())


def flow_runs(server: PrefectServer, *, key: str | None = None, tags: list[str] | None = None) -> list[FlowRun]:
    async def read() -> list[FlowRun]:
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[key]) if key else None,
                    tags=FlowRunFilterTags(all_=tags) if tags else None,
                )
            )

    with prefect(server):
        return run_async(read())


class Receiver:
    """A local HTTP server standing in for a bot's response_url and WeCom's API (gettoken, message/send)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, list[str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, data: dict[str, Any]) -> None:
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                receiver.token_requests.append(parse_qs(url.query))
                ok = parse_qs(url.query).get("corpsecret") == [CORP_SECRET]
                self._answer({"errcode": 0, "access_token": ACCESS_TOKEN, "expires_in": 7200} if ok else
                             {"errcode": 40001, "errmsg": "invalid credential"})  # fmt: skip

            def do_POST(self) -> None:
                url = urlparse(self.path)
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.append({"path": url.path, "query": parse_qs(url.query), "json": data})
                self._answer({"errcode": 0, "errmsg": "ok"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        return wait_until(
            lambda: next((p for p in self.posts if predicate(p)), None),
            done=lambda found: found is not None,
            failed=lambda _: None,
            what="a post to the receiver",
            timeout=timeout,
            first_delay=0.1,
            max_delay=0.5,
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Bridge:
    """The bridge app under uvicorn in a thread, with the Prefect server in its settings context."""

    def __init__(
        self,
        server: PrefectServer,
        settings: ChatopsSettings,
        clock: Callable[[], float] = time.time,
        wrap: Callable[[Any], Any] | None = None,
    ):
        """`wrap`: an ASGI middleware around the app (a test that watches what the app reads)."""
        self.prefect_server = server
        self.settings = settings
        with prefect(server):
            self.app = create_app(settings, clock=clock)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        served = wrap(self.app) if wrap is not None else self.app
        config = uvicorn.Config(served, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with prefect(self.prefect_server):
            self.uvicorn.run()

    def __enter__(self) -> Bridge:
        self.thread.start()
        wait_until(lambda: self.uvicorn.started, done=bool, failed=lambda _: None, what="the bridge", timeout=30,
                   first_delay=0.05, max_delay=0.2)  # fmt: skip
        return self

    def __exit__(self, *_: Any) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(15)

    def say(
        self,
        text: str,
        message_id: str,
        user: str = "ops",
        chat: str = "ops-room",
        response_url: str | None = None,
        secret: str = SECRET,
        timestamp: int | None = None,
    ) -> httpx.Response:
        payload: dict[str, Any] = {"message_id": message_id, "user": user, "chat": chat, "text": text}
        if response_url:
            payload["response_url"] = response_url
        body = json.dumps(payload).encode()
        headers = sign_generic(secret, body, int(time.time()) if timestamp is None else timestamp)
        return httpx.post(f"{self.url}/chat/generic", content=body, headers=headers, timeout=30)


def settings_for(tmp_path: Any, **overrides: Any) -> ChatopsSettings:
    values: dict[str, Any] = {
        "signing_secret": SECRET,
        "allowlist": json.dumps(ALLOWLIST),
        "state_dir": tmp_path / "chatops",
        "poll_seconds": 0.2,
        **overrides,
    }
    return ChatopsSettings(**values)


@contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()
