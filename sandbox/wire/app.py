"""The sandbox's HTTP front: one endpoint for every Tencent service, plus the `/_sandbox/` admin API.

A bare ASGI app (no framework) so that the per-request cost stays small: a signed
DescribeInstances is TC3 verification, JSON parsing, spec validation and the handler.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

from sandbox.core.catalog import REGIONS
from sandbox.core.emulated_cloud import Cloud
from sandbox.core.errors import ApiError
from sandbox.core.ids import request_id
from sandbox.core.registry import ACTIONS, VERSIONS, Request
from sandbox.wire import spec, tc3
from sandbox.wire.admin import ADMIN_ROUTES, AdminError, request_stats

log = logging.getLogger("sandbox")
TICK_SECONDS = 0.05
JSON = [(b"content-type", b"application/json")]  # exactly this: with a charset the SDK drops errors


class SandboxApp:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self._ticker: asyncio.Task[None] | None = None
        self.dataplane: Any = None  # sandbox.dataplane.DataPlane once started
        self.stats = request_stats(cloud)  # GET /_sandbox/stats
        # set by the server that serves this app: drop every connection, refuse new ones for the seconds given
        self.outage: Callable[[float], None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        headers = JSON
        try:
            if scope["path"].startswith("/_sandbox/"):
                status, payload = await self._admin(scope, body)
            else:
                status, payload = 200, await self._api(scope, body)
            data = json.dumps(payload, ensure_ascii=False).encode()
        except _HttpFault as fault:  # an injected gateway failure: not an API answer at all
            status, headers, data = fault.status, [(b"content-type", b"text/plain")], b"injected HTTP failure"
        except _Dropped:  # the endpoint restarted: this request's connection is gone, nothing is answered
            await asyncio.sleep(0)  # the transport's connection_lost runs: the server sees a client gone
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _api(self, scope: dict[str, Any], body: bytes) -> dict[str, Any]:
        rid = request_id()
        self.stats.in_flight += 1  # one event loop: no lock needed
        try:
            result = await self._dispatch(scope, body, rid)
        except ApiError as error:
            self.stats.error(error.code)
            return {"Response": {"Error": {"Code": error.code, "Message": error.message}, "RequestId": rid}}
        except (_HttpFault, _Dropped):
            raise
        except Exception:
            log.exception("unexpected error serving request %s", rid)
            error = {"Code": "InternalError", "Message": "An internal error occurred."}
            return {"Response": {"Error": error, "RequestId": rid}}
        finally:
            self.stats.in_flight -= 1
        result["RequestId"] = rid
        return {"Response": result}

    async def _dispatch(self, scope: dict[str, Any], body: bytes, rid: str) -> dict[str, Any]:
        method = scope["method"]
        if method not in ("GET", "POST"):
            raise ApiError("UnsupportedProtocol", f"HTTP method {method} is not supported: use GET or POST.")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        cloud = self.cloud
        signed = tc3.verify(method, headers, query, body, cloud.secrets, time.time())

        service, version, action = signed.service, headers.get("x-tc-version", ""), headers.get("x-tc-action", "")
        if service not in VERSIONS:
            raise ApiError("InvalidAction", f"The service `{service}` is not served here.")
        if version not in VERSIONS[service]:
            raise ApiError("NoSuchVersion", f"The API version `{version}` of `{service}` does not exist.")
        handler = ACTIONS.get((service, version, action))
        if handler is None:
            raise ApiError("InvalidAction", f"The action `{action}` of `{service}` {version} does not exist.")
        self.stats.count(service, action)
        region = headers.get("x-tc-region", "")
        if not region:
            raise ApiError("MissingParameter", "The request is missing a required parameter `Region`.")
        if region not in REGIONS:
            raise ApiError("UnsupportedRegion", f"The region `{region}` is not supported.")
        cloud.throttle.check(signed.secret_id, service, action)

        async_failure, lose_answer, late_loss_ms, outage_ms = None, False, 0, 0
        for rule in cloud.faults.pick(service, action):
            outage_ms = max(outage_ms, rule.outage_ms)
            if rule.outage_ms and not rule.lose_answer:
                self._restart(outage_ms)  # before the request takes effect
            lose_answer = lose_answer or rule.lose_answer
            if rule.lose_answer:  # the request takes effect at once; its (lost) answer is what is late
                late_loss_ms += rule.latency_ms
            elif rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)  # emulated network latency, not a readiness wait
            if rule.http_status:
                raise _HttpFault(rule.http_status)
            if rule.error_code:
                raise ApiError(rule.error_code, rule.error_message)
            async_failure = rule.async_failure or async_failure

        if method == "GET":
            params = spec.from_query(service, version, action, query)
        else:
            try:
                raw = json.loads(body or b"{}")
            except ValueError:
                raise ApiError("InvalidParameter", "The request body is not valid JSON.") from None
            params = spec.validate(service, version, action, raw)

        cloud.advance()
        request = Request(cloud, service, version, action, region, params, rid, signed.secret_id, async_failure)
        result = handler(request)
        if not action.startswith("Describe"):
            cloud.touched()
        if lose_answer:
            await asyncio.sleep(late_loss_ms / 1000)
            if outage_ms:
                self._restart(outage_ms)  # done, then the endpoint restarts: the client never hears so
            raise _HttpFault(502)  # done, but the client never hears so
        return result

    def _restart(self, outage_ms: int) -> NoReturn:
        if self.outage is None:
            raise ApiError("InternalError", "this sandbox's server cannot restart its endpoint")
        self.outage(outage_ms / 1000)
        raise _Dropped

    async def _admin(self, scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
        client = (scope.get("client") or ("",))[0]
        if not (client.startswith("127.") or client == "::1"):
            return 403, {"error": "the admin API answers on loopback only"}
        route = ADMIN_ROUTES.get((scope["method"], scope["path"]))
        if route is None:
            return 404, {"error": f"no admin route {scope['method']} {scope['path']}"}
        try:
            payload = json.loads(body) if body else {}
            result = route(self.cloud, payload)
            if asyncio.iscoroutine(result):
                result = await result
        except AdminError as error:
            return error.status, {"error": str(error)}
        except ValueError as error:  # includes pydantic's ValidationError
            return 400, {"error": str(error)}
        self.cloud.touched()
        return 200, result

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.cloud.config.dataplane:
                    from sandbox.dataplane import DataPlane

                    self.dataplane = DataPlane(self.cloud)
                    await self.dataplane.start()
                self._ticker = asyncio.create_task(self._tick())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._ticker:
                    self._ticker.cancel()
                if self.dataplane is not None:
                    await self.dataplane.stop()
                self.cloud.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _tick(self) -> None:
        # Asynchronous transitions happen even when nobody asks (the data plane must see a server boot).
        while True:
            try:
                self.cloud.advance()
                self.cloud.flush()
            except Exception:
                log.exception("sandbox tick failed")
            await asyncio.sleep(TICK_SECONDS)


class _Dropped(Exception):
    """The request's connection was dropped by an endpoint restart (`outage_ms`)."""


class _HttpFault(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
