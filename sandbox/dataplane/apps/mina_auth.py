"""The session server's auth service ("mina_auth", 会话服务): the Wafer MA protocol.

`POST /mina_auth/` with `{"version": 1, "componentName": "MA", "interface": {"interfaceName": ..., "para": ...}}`:
- `qcloud.cam.id_skey` (para: code, encrypt_data, iv): a login; answers returnCode 0 with
  returnData {id, skey, user_info}; an empty `code` is a failed WeChat session (60012).
- `qcloud.cam.auth` (para: id, skey): a session check; 0 with {user_info} for a known session,
  60011 for an unknown or expired one.
- anything else (not JSON, wrong version/component, unknown interface, missing para): -1.
Health: `GET /mina_auth/health` (and `GET /health` on a server whose only app is this one).

Sessions are signed, not stored: skey = HMAC-SHA1(sessionSecret, id), with the login time inside the
id. Every server built from one image shares the secret (its config is on the disk), so a session
opened on one answers on all of them, as the real servers do through their shared database.
Config `/etc/qcloud/mina_auth.json`: {"sessionSecret": str, "sessionTtlSeconds": int (default 7200)}.
"""

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from typing import Any

from sandbox.dataplane.apps.front import HttpRequest, HttpResponse, json_response

LOGIN = "qcloud.cam.id_skey"
CHECK = "qcloud.cam.auth"
OK, MALFORMED, SKEY_EXPIRED, WX_SESSION_FAILED = 0, -1, 60011, 60012


class ConfigError(ValueError):
    """The app cannot start with this config; the message says why (never the config's secrets)."""


class MinaAuth:
    kind = "mina_auth"

    def __init__(self, config_text: str, now: Callable[[], float]) -> None:
        try:
            config = json.loads(config_text)
        except ValueError as error:
            raise ConfigError(f"not valid JSON ({error})") from None
        if not isinstance(config, dict):
            raise ConfigError("not a JSON object")
        secret = config.get("sessionSecret")
        if not isinstance(secret, str) or len(secret) < 8:
            raise ConfigError("sessionSecret is missing or shorter than 8 characters")
        ttl = config.get("sessionTtlSeconds", 7200)
        if not isinstance(ttl, int) or ttl <= 0:
            raise ConfigError("sessionTtlSeconds must be a positive integer")
        self._secret = secret.encode()
        self.ttl = ttl
        self.now = now
        self.logins = 0
        self.checks = 0

    def describe(self) -> dict[str, Any]:
        return {"sessionTtlSeconds": self.ttl, "logins": self.logins, "checks": self.checks}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return json_response(405, {"error": "the MA protocol is POST /mina_auth/"})
        try:
            message = request.json()
        except ValueError:
            return _answer(MALFORMED, "ERR_REQUEST_PARAM: the body is not JSON")
        return json_response(200, self.answer(message))

    def answer(self, message: Any) -> dict[str, Any]:
        if not isinstance(message, dict) or message.get("version") != 1 or message.get("componentName") != "MA":
            return _ma(MALFORMED, "ERR_REQUEST_PARAM: expected version 1 and componentName MA")
        interface = message.get("interface")
        if not isinstance(interface, dict) or not isinstance(interface.get("para"), dict):
            return _ma(MALFORMED, "ERR_REQUEST_PARAM: interface.para is missing")
        name, para = interface.get("interfaceName"), interface["para"]
        if name == LOGIN:
            return self._login(para)
        if name == CHECK:
            return self._check(para)
        return _ma(MALFORMED, f"ERR_REQUEST_PARAM: unknown interfaceName {str(name)[:64]!r}")

    def _login(self, para: dict[str, Any]) -> dict[str, Any]:
        code = para.get("code")
        if not isinstance(code, str):
            return _ma(MALFORMED, "ERR_REQUEST_PARAM: para.code is missing")
        if not code.strip():
            return _ma(WX_SESSION_FAILED, "ERR_WX_GET_SESSION_KEY: the WeChat login code is empty")
        self.logins += 1
        open_id = "o" + base64.b32encode(hashlib.sha256(code.encode()).digest()).decode().lower()[:27]
        session_id = f"{open_id}.{int(self.now()):x}.{secrets.token_hex(4)}"
        data = {"id": session_id, "skey": self._sign(session_id), "user_info": _user_info(open_id)}
        return _ma(OK, "OK", data)

    def _check(self, para: dict[str, Any]) -> dict[str, Any]:
        session_id, skey = para.get("id"), para.get("skey")
        if not isinstance(session_id, str) or not isinstance(skey, str):
            return _ma(MALFORMED, "ERR_REQUEST_PARAM: para.id and para.skey are required")
        self.checks += 1
        parts = session_id.split(".")
        if len(parts) != 3 or not hmac.compare_digest(self._sign(session_id), skey):
            return _ma(SKEY_EXPIRED, "ERR_SKEY_INVALID: unknown session")
        try:
            issued = int(parts[1], 16)
        except ValueError:
            return _ma(SKEY_EXPIRED, "ERR_SKEY_INVALID: unknown session")
        if self.now() - issued > self.ttl:
            return _ma(SKEY_EXPIRED, "ERR_SKEY_EXPIRED: the session has expired")
        return _ma(OK, "OK", {"user_info": _user_info(parts[0])})

    def _sign(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha1).hexdigest()


def auth_probe() -> dict[str, Any]:
    """The request a business server sends to prove its auth service answers (no real user needed)."""
    return {"version": 1, "componentName": "MA", "interface": {"interfaceName": CHECK, "para": {"id": "", "skey": ""}}}


def login_request(code: str, encrypt_data: str = "", iv: str = "") -> dict[str, Any]:
    para = {"code": code, "encrypt_data": encrypt_data, "iv": iv}
    return {"version": 1, "componentName": "MA", "interface": {"interfaceName": LOGIN, "para": para}}


def check_request(session_id: str, skey: str) -> dict[str, Any]:
    para = {"id": session_id, "skey": skey}
    return {"version": 1, "componentName": "MA", "interface": {"interfaceName": CHECK, "para": para}}


def is_ma_answer(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("returnCode"), int) and "returnMessage" in payload


def _user_info(open_id: str) -> dict[str, Any]:
    return {"openId": open_id, "nickName": f"user-{open_id[-6:]}", "gender": 0, "language": "zh_CN", "city": ""}


def _ma(code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"returnCode": code, "returnMessage": message, "returnData": data or {}}


def _answer(code: int, message: str) -> HttpResponse:
    return json_response(200, _ma(code, message))
