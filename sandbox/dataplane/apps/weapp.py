"""A business server's app (the guide's node-weapp-demo; also its Java and IIS flavours).

It reads the Wafer `sdk.config` when it (re)starts and keeps what it LOADED until the next restart
(rewriting the file changes nothing until then, as with the real demo). Routes:
- `GET /health`: 200 `{"status": "up" | "degraded", "authServerUrl": <loaded>, "auth": {"reachable": ...}}`;
  "degraded" when the auth service does not give a well-formed MA answer to a `qcloud.cam.auth`
  probe sent FROM this server's own private address (so the session servers' security groups apply).
- `POST /login` (or `GET /login`), the Wafer login: headers `X-WX-Code`, `X-WX-Encrypted-Data`,
  `X-WX-IV` (or a JSON body with code / encrypt_data / iv) -> `qcloud.cam.id_skey` to authServerUrl ->
  `{"F2C224D4-...": 1, "session": {"id", "skey"}, "userInfo": {...}}`, or an `error` of ERR_LOGIN_FAILED.
- `GET /user`: headers `X-WX-Id`, `X-WX-Skey` -> `qcloud.cam.auth` -> `{"code": 0, "data": {"userInfo"}}`
  or `{"code": -1, "error": "ERR_INVALID_SESSION"}` (status 401).
"""

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sandbox.dataplane.apps.front import HttpRequest, HttpResponse, json_response
from sandbox.dataplane.apps.mina_auth import ConfigError, auth_probe, check_request, is_ma_answer, login_request
from sandbox.dataplane.net import http_probe

WX_SESSION_MAGIC_ID = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"
PROBE_TIMEOUT = 2.0  # health must answer quickly even when the auth service is dead


class Weapp:
    kind = "weapp"

    def __init__(self, config_text: str, source_ip: str | None, now: Callable[[], float]) -> None:
        try:
            # A UTF-8 BOM is what Windows editors write (and what .NET's config readers skip): accept it.
            config = json.loads(config_text.removeprefix("\ufeff"))
        except ValueError as error:
            raise ConfigError(f"not valid JSON ({error})") from None
        if not isinstance(config, dict):
            raise ConfigError("not a JSON object")
        url = config.get("authServerUrl")
        if not isinstance(url, str) or urlsplit(url).scheme != "http" or not urlsplit(url).hostname:
            raise ConfigError("authServerUrl is missing or not an http:// URL")
        timeout_ms = config.get("networkTimeout", 30000)
        if not isinstance(timeout_ms, int | float) or timeout_ms <= 0:
            raise ConfigError("networkTimeout must be a positive number of milliseconds")
        self.auth_server_url = url
        self.server_host = config.get("serverHost")
        self.network_timeout = timeout_ms / 1000
        self.source_ip = source_ip
        self.now = now
        self.logins = 0

    def describe(self) -> dict[str, Any]:
        return {"authServerUrl": self.auth_server_url, "serverHost": self.server_host, "logins": self.logins}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path in ("/health", "/health/"):
            return json_response(200, await self.health())
        if request.path in ("/login", "/weapp/login"):
            return await self._login(request)
        if request.path in ("/user", "/weapp/user"):
            return await self._user(request)
        if request.path == "/":
            return json_response(200, {"app": "node-weapp-demo", "message": "Hello, the mini-program backend."})
        return json_response(404, {"error": f"no route {request.path}"})

    async def health(self) -> dict[str, Any]:
        auth = await self.probe_auth()
        status = "up" if auth["reachable"] else "degraded"
        return {"status": status, "authServerUrl": self.auth_server_url, "auth": auth}

    async def probe_auth(self) -> dict[str, Any]:
        try:
            answer = await self._call_auth(auth_probe(), min(self.network_timeout, PROBE_TIMEOUT))
        except (OSError, ValueError) as error:
            return {"reachable": False, "error": str(error) or type(error).__name__}
        return {"reachable": True, "returnCode": answer["returnCode"]}

    async def _login(self, request: HttpRequest) -> HttpResponse:
        fields = _body_fields(request)
        code = request.headers.get("x-wx-code", fields.get("code", ""))
        data = request.headers.get("x-wx-encrypted-data", fields.get("encrypt_data", ""))
        iv = request.headers.get("x-wx-iv", fields.get("iv", ""))
        try:
            answer = await self._call_auth(login_request(code, data, iv), self.network_timeout)
        except (OSError, ValueError) as error:
            message = f"the auth service at {self.auth_server_url} did not answer: {error}"
            return json_response(500, {WX_SESSION_MAGIC_ID: 1, "error": "ERR_LOGIN_FAILED", "message": message})
        if answer["returnCode"] != 0:
            body = {WX_SESSION_MAGIC_ID: 1, "error": "ERR_LOGIN_FAILED", "message": answer["returnMessage"]}
            return json_response(401, body)
        self.logins += 1
        result = answer["returnData"]
        session = {"id": result["id"], "skey": result["skey"]}
        return json_response(200, {WX_SESSION_MAGIC_ID: 1, "session": session, "userInfo": result["user_info"]})

    async def _user(self, request: HttpRequest) -> HttpResponse:
        session_id = request.headers.get("x-wx-id", "")
        skey = request.headers.get("x-wx-skey", "")
        try:
            answer = await self._call_auth(check_request(session_id, skey), self.network_timeout)
        except (OSError, ValueError) as error:
            return json_response(500, {"code": -1, "error": "ERR_CHECK_LOGIN_FAILED", "message": str(error)})
        if answer["returnCode"] != 0:
            return json_response(401, {"code": -1, "error": "ERR_INVALID_SESSION", "message": answer["returnMessage"]})
        return json_response(200, {"code": 0, "data": {"userInfo": answer["returnData"].get("user_info")}})

    async def _call_auth(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST one MA message to authServerUrl from this server's address; ValueError if the answer is not MA."""
        answer = await http_probe(self.source_ip, self.auth_server_url, "POST", json=message, timeout=timeout)
        try:
            payload = answer.json()
        except ValueError:
            raise ValueError(f"HTTP {answer.status} without an MA answer") from None
        if answer.status != 200 or not is_ma_answer(payload):
            raise ValueError(f"HTTP {answer.status} without an MA answer")
        return payload


def _body_fields(request: HttpRequest) -> dict[str, str]:
    try:
        payload = request.json()
    except ValueError:
        return {}
    if not isinstance(payload, dict):
        return {}
    return {k: v for k, v in payload.items() if isinstance(v, str)}
