"""A business server's app, as the real Wafer apps behave: the node demo, the Java flavour (tomcat), the IIS one.

Each reads the Wafer `sdk.config` when it (re)starts and keeps what it LOADED until the next restart
(rewriting the file changes nothing until then). No health endpoint: only the real routes.
- node demo (pm2, port 5757): `GET /` (HTML "腾讯云微信小程序服务器 Demo - Node.js"), `/login`, `/user`, `/tunnel`.
  An unparseable sdk.config: the process prints "SDK 配置文件（…）内容不合法" and exits 1 (ConfigError).
- Java (tomcat, port 8080): `/login`, `/user`, `/tunnel`, no `/`. An unparseable sdk.config (org.json: no
  comments) is only printed: the app answers, and every login / session check fails.
- IIS (port 80): `/`, `/login`, `/user`, `/tunnel`; Json.NET tolerates comments and a BOM; an unparseable
  sdk.config makes every request a 500.
`/login` without `X-WX-Code`: 200 {"F2C224D4-…": 1, "error": "ERR_LOGIN_FAILED", …} without calling the auth
service; with it, `qcloud.cam.id_skey` to authServerUrl -> {"F2C224D4-…": 1, "session": {"id", "skey"}}.
`/user` (and `/tunnel`) with `X-WX-Id` / `X-WX-Skey`: `qcloud.cam.auth` -> {"code": 0, "message": "ok",
"data": {"userInfo"}}, or the SDK's error: ERR_INVALID_SESSION with "鉴权服务调用失败：60012 - AUTH_FAIL" (node;
Java "调用鉴权服务失败：#60012 - AUTH_FAIL", C# "鉴权服务调用失败：#60012 - $AUTH_FAIL"), or, when the auth
service cannot be reached, ERR_CHECK_LOGIN_FAILED with the network error ("connect ECONNREFUSED ip:port",
Java "连接鉴权服务错误，请检查网络状态…"). Calls to the auth service leave FROM the server's own private address.
"""

import json
import re
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from sandbox.dataplane.apps.front import HttpRequest, HttpResponse, html_response, json_response
from sandbox.dataplane.apps.mina_auth import ConfigError, check_request, is_ma_answer, login_request
from sandbox.dataplane.net import http_probe

WX_SESSION_MAGIC_ID = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"
NODE_TITLE = "腾讯云微信小程序服务器 Demo - Node.js"
Flavour = Literal["node", "java", "iis"]
INVALID_SESSION_CODES = (60011, 60012)


class AuthUnreachable(Exception):
    """The auth service gave no usable answer; `message` is what the app's SDK would say."""


def _strip_comments(text: str) -> str:
    """Json.NET accepts // and /* */ comments outside strings: drop them (strings kept intact)."""
    pattern = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)
    return pattern.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)


class Weapp:
    kind = "weapp"

    def __init__(
        self,
        config_text: str,
        flavour: Flavour,
        config_path: str,
        source_ip: str | None,
        connect_port: Callable[[int], int] = lambda port: port,
    ) -> None:
        self.flavour = flavour
        self.config_path = config_path
        self.source_ip = source_ip
        self.connect_port = connect_port
        self.logins = 0
        self.config_error: str | None = None
        self.auth_server_url: str | None = None
        self.server_host: str | None = None
        self.network_timeout = 30.0
        text = config_text.removeprefix("\ufeff")
        try:
            config = json.loads(_strip_comments(text) if flavour == "iis" else text)
            if not isinstance(config, dict) or not isinstance(config.get("authServerUrl"), str):
                raise ValueError("authServerUrl is missing")
            timeout = float(config.get("networkTimeout", 30000))
        except (ValueError, TypeError) as error:
            if flavour == "node":  # the demo prints this and exits 1 (pm2 restarts it, again and again)
                raise ConfigError(f"SDK 配置文件（{config_path}）内容不合法") from None
            self.config_error = f"{type(error).__name__}: {error}"
            return
        self.auth_server_url = config["authServerUrl"]
        self.server_host = config.get("serverHost")
        self.network_timeout = timeout / 1000 if timeout > 0 else 30.0

    def describe(self) -> dict[str, Any]:
        return {
            "flavour": self.flavour,
            "authServerUrl": self.auth_server_url,
            "serverHost": self.server_host,
            "configError": self.config_error,
            "logins": self.logins,
        }

    def startup_log(self) -> str:
        loaded = {"serverHost": self.server_host, "authServerUrl": self.auth_server_url}
        return f"[当前 SDK 使用配置] => {json.dumps(loaded, ensure_ascii=False)}\n"

    # ---- routes ---------------------------------------------------------------------------------
    async def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if self.flavour == "iis" and self.config_error is not None:
            return html_response(500, "<h1>Server Error in '/' Application.</h1><p>sdk.config: invalid JSON</p>")
        if path == "/" and self.flavour != "java" and request.method in ("GET", "HEAD"):
            title = NODE_TITLE if self.flavour == "node" else "腾讯云微信小程序服务器 Demo - C#"
            return html_response(200, f"<!DOCTYPE html><html><head><title>{title}</title></head>"
                                      f"<body><h1>{title}</h1></body></html>")  # fmt: skip
        if path == "/login" and (self.flavour == "node" or request.method in ("GET", "POST")):
            return await self._login(request)
        if path in ("/user", "/tunnel"):
            return await self._user(request, tunnel=path == "/tunnel")
        return self._not_found(request)

    def _not_found(self, request: HttpRequest) -> HttpResponse:
        if self.flavour == "node":  # express' default
            return html_response(404, f"<pre>Cannot {request.method} {request.path}</pre>")
        if self.flavour == "java":
            return html_response(404, "<h1>HTTP Status 404 – Not Found</h1>")
        return html_response(404, "<h2>404 - File or directory not found.</h2>")

    async def _login(self, request: HttpRequest) -> HttpResponse:
        code = request.headers.get("x-wx-code", "")
        if not code:
            return _error("ERR_LOGIN_FAILED", "请求头未包含 code，请配合客户端 SDK 登录后再进行请求")
        if self.config_error is not None:
            return _error("ERR_LOGIN_FAILED", self._unconfigured())
        data = request.headers.get("x-wx-encrypted-data", "")
        iv = request.headers.get("x-wx-iv", "")
        try:
            answer = await self._call_auth(login_request(code, data, iv))
        except AuthUnreachable as error:
            return _error("ERR_LOGIN_FAILED", str(error))
        if answer["returnCode"] != 0:
            return _error("ERR_LOGIN_FAILED", self._auth_failed(answer))
        self.logins += 1
        result = answer["returnData"]
        return json_response(200, {WX_SESSION_MAGIC_ID: 1, "session": {"id": result["id"], "skey": result["skey"]}})

    async def _user(self, request: HttpRequest, tunnel: bool) -> HttpResponse:
        if self.config_error is not None:
            return _error("ERR_CHECK_LOGIN_FAILED", self._unconfigured())
        session_id = request.headers.get("x-wx-id", "")
        skey = request.headers.get("x-wx-skey", "")
        try:
            answer = await self._call_auth(check_request(session_id, skey))
        except AuthUnreachable as error:
            return _error("ERR_CHECK_LOGIN_FAILED", str(error))
        code = answer["returnCode"]
        if code in INVALID_SESSION_CODES:
            return _error("ERR_INVALID_SESSION", self._auth_failed(answer))
        if code != 0:
            return _error("ERR_CHECK_LOGIN_FAILED", self._auth_failed(answer))
        user_info = (answer.get("returnData") or {}).get("user_info")
        if tunnel:
            return json_response(200, {"code": 0, "message": "ok", "data": {"connectUrl": None}})
        return json_response(200, {"code": 0, "message": "ok", "data": {"userInfo": user_info}})

    # ---- the SDKs' wording ----------------------------------------------------------------------
    def _auth_failed(self, answer: dict[str, Any]) -> str:
        code, message = answer["returnCode"], answer.get("returnMessage")
        if self.flavour == "java":
            return f"调用鉴权服务失败：#{code} - {message}"
        if self.flavour == "iis":
            return f"鉴权服务调用失败：#{code} - ${message}"
        return f"鉴权服务调用失败：{code} - {message}"

    def _unconfigured(self) -> str:
        return f"SDK 配置不正确（{self.config_path}）：{self.config_error}"

    def _unreachable(self, url: str, error: OSError) -> str:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 80}"
        if self.flavour == "java":
            return f"连接鉴权服务错误，请检查网络状态{url}{_java_reason(error)}"
        if self.flavour == "iis":
            return f"鉴权服务调用失败：{'操作超时' if isinstance(error, TimeoutError) else '无法连接到远程服务器'}"
        if isinstance(error, TimeoutError):
            return f"connect ETIMEDOUT {where}"
        if isinstance(error, ConnectionRefusedError):
            return f"connect ECONNREFUSED {where}"
        return "socket hang up" if isinstance(error, ConnectionResetError) else f"connect EHOSTUNREACH {where}"

    async def _call_auth(self, message: dict[str, Any]) -> dict[str, Any]:
        """POST one MA message to the loaded authServerUrl from this server's address."""
        url = self.auth_server_url or ""
        try:
            answer = await http_probe(
                self.source_ip, url, "POST", json=message, timeout=self.network_timeout, connect_port=self.connect_port
            )
        except OSError as error:
            raise AuthUnreachable(self._unreachable(url, error)) from None
        except ValueError as error:
            raise AuthUnreachable(f'Invalid URI "{url}": {error}') from None
        if answer.status != 200:
            raise AuthUnreachable("请求鉴权 API 失败，网络异常或鉴权服务器错误")
        try:
            payload = answer.json()
        except ValueError:
            payload = None
        if not is_ma_answer(payload):
            raise AuthUnreachable("鉴权服务器响应格式错误，无法解析 JSON 字符串")
        return payload


def _java_reason(error: OSError) -> str:
    if isinstance(error, TimeoutError):
        return "connect timed out"
    if isinstance(error, ConnectionRefusedError):
        return "Connection refused (Connection refused)"
    return "Connection reset"


def _error(kind: str, message: str) -> HttpResponse:
    return json_response(200, {WX_SESSION_MAGIC_ID: 1, "error": kind, "message": message})
