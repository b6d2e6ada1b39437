"""Issue 14 defect 6(a): an over-size request is refused before the bridge reads it into memory.

The bridge runs under uvicorn (real HTTP); a middleware counts the body bytes the app pulls through ASGI `receive`.
A body declared larger than the limit is refused from its Content-Length without a byte read; a streamed
(chunked) body is read no further than the receive that crossed the limit. Nothing is signed-checked or run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatops.inbound import MAX_BODY
from devstack.prefect_server import PrefectServer
from tests.chatops.support import CORP_SECRET, Bridge, ensure_deployments, flow_runs, settings_for
from tests.chatops.test_signing import AES_KEY, CORP, TOKEN

BIG = 16 * 1024 * 1024  # 256 times the limit: reading it all would show at once
CHUNK = 64 * 1024
# uvicorn hands the app at most its 64 KB high-water mark plus one socket read (asyncio reads up to 256 KB) per
# receive, so an app that stops at the limit has read well under this; one that reads all has read BIG
BOUND = MAX_BODY + 512 * 1024


class BodyCounter:
    """ASGI middleware: the body bytes the app received through `receive`, for the last request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.received = 0

        async def counting() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


def zeros(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"0" * min(CHUNK, total - sent)
        sent += CHUNK


@pytest.fixture(scope="module")
def server(prefect_server: PrefectServer) -> PrefectServer:
    ensure_deployments(prefect_server)
    return prefect_server


@pytest.fixture
def counted(server: PrefectServer, tmp_path: Path) -> Iterator[tuple[Bridge, BodyCounter]]:
    counters: list[BodyCounter] = []

    def wrap(app: Any) -> BodyCounter:
        counters.append(BodyCounter(app))
        return counters[0]

    settings = settings_for(
        tmp_path, platforms="generic,wecom,wecom-robot", wecom_token=TOKEN, wecom_aes_key=AES_KEY, wecom_corp_id=CORP,
        wecom_corp_secret=CORP_SECRET, wecom_agent_id=218, wecom_robot_token=TOKEN, wecom_robot_aes_key=AES_KEY,
        wecom_robot_id="aibTcscaleOps01",
    )  # fmt: skip
    with Bridge(server, settings, wrap=wrap) as bridge:
        yield bridge, counters[0]


@pytest.mark.parametrize("route", ["/chat/generic", "/chat/wecom", "/chat/wecom-robot"])
def test_an_over_size_body_is_refused_before_it_is_read(
    counted: tuple[Bridge, BodyCounter], server: PrefectServer, route: str
) -> None:
    bridge, counter = counted
    before = len(flow_runs(server, tags=["chat"]))
    url = f"{bridge.url}{route}"
    # declared too large: refused from the Content-Length, not a byte read
    declared = httpx.post(url, content=zeros(BIG), headers={"Content-Length": str(BIG)}, timeout=60)
    assert declared.status_code == 413 and declared.json() == {"error": "request too large"}
    assert counter.received == 0, f"the app read {counter.received} bytes of a body declared too large"
    # streamed without a length: the app stops reading at the limit
    streamed = httpx.post(url, content=zeros(BIG), timeout=60)
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert streamed.status_code == 413 and streamed.json() == {"error": "request too large"}
    assert counter.received <= BOUND, f"the app read {counter.received} bytes of a streamed body (limit {MAX_BODY})"
    # a body just over the limit in one piece, and the bridge still answers a normal request afterwards
    assert httpx.post(url, content=b"0" * (MAX_BODY + 1), timeout=30).status_code == 413
    assert httpx.get(f"{bridge.url}/health", timeout=30).json() == {"ok": True}
    assert len(flow_runs(server, tags=["chat"])) == before
    audit = [json.loads(line) for line in bridge.settings.audit_path().read_text().splitlines()]
    assert [a["decision"] for a in audit] == ["rejected: request too large"] * 3
