"""Verification over HTTP with what the REAL Wafer apps answer (none of them has a health endpoint).

- The business app is up: `GET /login` without headers answers 200 with the Wafer session magic id
  (`F2C224D4-…`, ERR_LOGIN_FAILED) without calling the auth service (`probe_app_up`).
- The RUNNING app's LOADED authServerUrl reaches a session server: `GET /user` with a made-up session
  (`X-WX-Id` / `X-WX-Skey`) makes the app ask its auth service, and the answer carries the session
  service's verdict "60012" (AUTH_FAIL); a dead or wrong URL gives a connection error instead
  (`probe_session_reach`).
- The session service answers: a `qcloud.cam.auth` MA request with made-up alphanumeric ids gets a
  well-formed MA answer (version, componentName, returnCode) (`probe_auth`).
Every path, status, port and expected text is a field of `HealthCheck` (the flows' `health` parameter).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import BaseModel, Field

from tasks.models import RuntimeProfile
from tasks.waiters import wait_until

WX_SESSION_MAGIC_ID = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"
PROBE_ID = "tcscaleprobe"  # mina_auth accepts alphanumeric ids only
AUTH_PROBE = {
    "version": 1,
    "componentName": "MA",
    "interface": {"interfaceName": "qcloud.cam.auth", "para": {"id": PROBE_ID, "skey": PROBE_ID}},
}
MADE_UP_SESSION = {"X-WX-Id": PROBE_ID, "X-WX-Skey": PROBE_ID}

# Made once: without it every httpx.get/post builds a TLS context (~35 ms of CPU loading CA certificates),
# which serialised 101 probes through a VIP into 3-5 s. Each probe still opens its own connection.
_TLS = ssl.create_default_context()


class HealthCheck(BaseModel):
    """How to tell, over HTTP, that a real Wafer app is up and reaches its session service."""

    app_port: int | None = Field(
        None, ge=1, le=65535, description="the business app's port; None: the runtime profile's (5757 / 8080 / 80)"
    )
    up_path: str = Field("/login", description="GET without headers: the app answers by itself")
    up_status: int = Field(200, ge=100, le=599, description="expected status of up_path")
    up_text: str = Field(WX_SESSION_MAGIC_ID, description="expected in up_path's body (the Wafer session magic id)")
    session_path: str = Field("/user", description="GET with a made-up session: the app asks its auth service")
    session_text: str = Field("60012", description="the session service's verdict (AUTH_FAIL) in the app's answer")
    auth_path: str = Field("/mina_auth/", description="the session service's MA endpoint")
    auth_port: int = Field(80, ge=1, le=65535, description="the session service's port (mina_auth on Apache: 80)")
    timeout_seconds: float = Field(5.0, gt=0, le=60, description="one probe's HTTP timeout")
    settle_seconds: float = Field(3.0, ge=0, le=300, description="how long the app must stay up after a restart")

    def port_for(self, profile: RuntimeProfile) -> int:
        return self.app_port or profile.port


class Probe(BaseModel):
    target: str
    ok: bool
    detail: str
    status: int | None = None
    elapsed_ms: float = 0.0
    body: dict[str, Any] | None = None


def auth_url(host: str, port: int, path: str = "/mina_auth/") -> str:
    """`http://VIP/mina_auth/` (the port appears only when it is not 80), as the guide writes authServerUrl."""
    return f"http://{host}{'' if port == 80 else f':{port}'}{path}"


def app_url(host: str, port: int, path: str) -> str:
    return f"http://{host}:{port}{path}"


def is_ma_answer(payload: Any) -> bool:
    """A well-formed answer of the session service: version, componentName MA, an integer returnCode."""
    return (
        isinstance(payload, dict)
        and payload.get("componentName") == "MA"
        and "version" in payload
        and isinstance(payload.get("returnCode"), int)
    )


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _timed(target: str, request: Callable[[], httpx.Response], judge: Callable[[httpx.Response], Probe]) -> Probe:
    start = time.perf_counter()
    try:
        response = request()
    except httpx.HTTPError as error:
        elapsed = (time.perf_counter() - start) * 1000
        return Probe(target=target, ok=False, detail=f"no answer: {type(error).__name__}: {error}", elapsed_ms=elapsed)
    probe = judge(response)
    probe.elapsed_ms = (time.perf_counter() - start) * 1000
    return probe


def probe_auth(url: str, timeout: float) -> Probe:
    """POST the MA `qcloud.cam.auth` probe; ok on a well-formed MA answer (mina_auth sends no Content-Type)."""

    def judge(response: httpx.Response) -> Probe:
        body = _json(response.text)
        if is_ma_answer(body):
            detail = f"MA answer returnCode {body['returnCode']} ({body.get('returnMessage')})"
            return Probe(target=url, ok=True, detail=detail, status=response.status_code, body=body)
        text = response.text[:200]
        return Probe(target=url, ok=False, detail=f"not an MA answer: {text!r}", status=response.status_code)

    return _timed(url, lambda: httpx.post(url, json=AUTH_PROBE, timeout=timeout, verify=_TLS), judge)


def probe_app_up(host: str, port: int, check: HealthCheck) -> Probe:
    """GET up_path without headers: ok when the status and the expected text are there."""
    url = app_url(host, port, check.up_path)

    def judge(response: httpx.Response) -> Probe:
        body = _json(response.text)
        body = body if isinstance(body, dict) else None
        if response.status_code != check.up_status:
            detail = f"HTTP {response.status_code} (expected {check.up_status}): {response.text[:200]!r}"
            return Probe(target=url, ok=False, detail=detail, status=response.status_code, body=body)
        if check.up_text not in response.text:
            detail = f"HTTP {response.status_code} without {check.up_text!r}: {response.text[:200]!r}"
            return Probe(target=url, ok=False, detail=detail, status=response.status_code, body=body)
        return Probe(
            target=url, ok=True, detail=f"up: HTTP {response.status_code}", status=response.status_code, body=body
        )

    return _timed(url, lambda: httpx.get(url, timeout=check.timeout_seconds, verify=_TLS), judge)


def probe_session_reach(host: str, port: int, check: HealthCheck) -> Probe:
    """GET session_path with a made-up session: ok when the app's answer carries the session service's verdict.

    The app asks the auth service at the authServerUrl it LOADED, so this proves the running app reaches a
    session server; `detail` is the app's own message (e.g. "鉴权服务调用失败：60012 - AUTH_FAIL", or
    "connect ECONNREFUSED 10.0.0.5:80" when it cannot).
    """
    url = app_url(host, port, check.session_path)
    timeout = check.timeout_seconds * 2  # the app's own call to the auth service happens inside this one

    def judge(response: httpx.Response) -> Probe:
        body = _json(response.text)
        body = body if isinstance(body, dict) else None
        message = str(body.get("message") or body.get("error") or "") if body else response.text[:200]
        reached = response.status_code < 500 and check.session_text in response.text
        detail = f"{'reaches its session service' if reached else 'does not reach its session service'}: {message}"
        return Probe(target=url, ok=reached, detail=detail, status=response.status_code, body=body)

    return _timed(url, lambda: httpx.get(url, headers=MADE_UP_SESSION, timeout=timeout, verify=_TLS), judge)


def probe_all(probes: dict[str, Callable[[], Probe]], workers: int = 16) -> dict[str, Probe]:
    """Run named probes in parallel threads: {name: result}."""
    if not probes:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(probes))) as pool:
        futures = {name: pool.submit(probe) for name, probe in probes.items()}
        return {name: future.result() for name, future in futures.items()}


def wait_until_ok(
    probes: dict[str, Callable[[], Probe]],
    what: str,
    timeout: float,
    poll: float = 1.0,
    results: dict[str, Probe] | None = None,
) -> dict[str, Probe]:
    """Probe until every one is ok (servers that just booted need a moment); times out naming the failures.

    `results` (filled as probes answer) holds the last result of each, also when the wait fails.
    """
    results = {} if results is None else results

    def round_of_probes() -> dict[str, str]:
        pending = {name: probe for name, probe in probes.items() if not (name in results and results[name].ok)}
        results.update(probe_all(pending))
        return {name: results[name].detail for name in pending if not results[name].ok}

    wait_until(
        round_of_probes,
        done=lambda failing: not failing,
        failed=lambda _: None,
        what=what,
        timeout=timeout,
        first_delay=min(poll, 0.1),
        max_delay=poll,
    )
    return results
