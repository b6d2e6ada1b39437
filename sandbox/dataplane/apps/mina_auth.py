"""The session server's auth service ("mina_auth", 会话服务): the Wafer MA protocol, as the real PHP answers it.

`http://IP/mina_auth/` (Apache, port 80) answers ANY method with HTTP 200 and no Content-Type, always
`{"version": 1, "componentName": "MA", "returnCode": ..., "returnMessage": ..., "returnData": ...}`:
- the body is not JSON (a GET has none): 1009 REQUEST_IS_NOT_JSON
- no `interface.interfaceName`: 1002 NO_INTERFACENAME_PARA; no `interface.para`: 1011 NO_PARA
- `qcloud.cam.id_skey` (para: code, encrypt_data, iv): a login; 0 with returnData {id, skey, user_info};
  without code / encrypt_data 1003 PARA_ERR; an empty code is a failed WeChat session (60012)
- `qcloud.cam.auth` (para: id, skey): 0 with {user_info} for a known session, 60011 for an expired one,
  60012 AUTH_FAIL for an unknown one; without id / skey 1003 PARA_ERR
- any other interfaceName: 1010 INTERFACENAME_PARA_ERR
No health endpoint (the real one has none).

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

from sandbox.dataplane.apps.front import HttpRequest, HttpResponse

LOGIN = "qcloud.cam.id_skey"
CHECK = "qcloud.cam.auth"
OK, SKEY_EXPIRED, AUTH_FAIL = 0, 60011, 60012
NOT_JSON, NO_INTERFACE, PARA_ERR, UNKNOWN_INTERFACE, NO_PARA = 1009, 1002, 1003, 1010, 1011


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
        try:
            message = request.json() if request.body.strip() else None
        except ValueError:
            message = None
        return HttpResponse(200, json.dumps(self.answer(message), ensure_ascii=False).encode(), content_type=None)

    def answer(self, message: Any) -> dict[str, Any]:
        if not isinstance(message, dict):
            return _ma(NOT_JSON, "REQUEST_IS_NOT_JSON")
        interface = message.get("interface")
        if not isinstance(interface, dict) or interface.get("interfaceName") is None:
            return _ma(NO_INTERFACE, "NO_INTERFACENAME_PARA")
        if interface.get("para") is None:
            return _ma(NO_PARA, "NO_PARA")
        name, para = interface["interfaceName"], interface["para"]
        para = para if isinstance(para, dict) else {}
        if name == LOGIN:
            return self._login(para)
        if name == CHECK:
            return self._check(para)
        return _ma(UNKNOWN_INTERFACE, "INTERFACENAME_PARA_ERR")

    def _login(self, para: dict[str, Any]) -> dict[str, Any]:
        code = para.get("code")
        if not isinstance(code, str) or not isinstance(para.get("encrypt_data"), str):
            return _ma(PARA_ERR, "PARA_ERR")
        if not code.strip():
            return _ma(AUTH_FAIL, "GET_SESSION_KEY_FAIL")
        self.logins += 1
        open_id = "o" + base64.b32encode(hashlib.sha256(code.encode()).digest()).decode().lower()[:27]
        session_id = f"{open_id}.{int(self.now()):x}.{secrets.token_hex(4)}"
        data = {"id": session_id, "skey": self._sign(session_id), "user_info": _user_info(open_id)}
        return _ma(OK, "NEW_SESSION_SUCCESS", data)

    def _check(self, para: dict[str, Any]) -> dict[str, Any]:
        session_id, skey = para.get("id"), para.get("skey")
        if not isinstance(session_id, str) or not isinstance(skey, str):
            return _ma(PARA_ERR, "PARA_ERR")
        self.checks += 1
        parts = session_id.split(".")
        if len(parts) != 3 or not hmac.compare_digest(self._sign(session_id), skey):
            return _ma(AUTH_FAIL, "AUTH_FAIL")
        try:
            issued = int(parts[1], 16)
        except ValueError:
            return _ma(AUTH_FAIL, "AUTH_FAIL")
        if self.now() - issued > self.ttl:
            return _ma(SKEY_EXPIRED, "CHECK_SKEY_EXPIRED")
        return _ma(OK, "AUTH_SUCCESS", {"user_info": _user_info(parts[0])})

    def _sign(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha1).hexdigest()


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
    return {"version": 1, "componentName": "MA", "returnCode": code, "returnMessage": message, "returnData": data or ""}
