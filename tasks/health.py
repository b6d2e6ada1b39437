"""Verification over HTTP: the session service answers the MA protocol, business servers are healthy.

A well-formed MA answer to a `qcloud.cam.auth` probe (any returnCode, e.g. 60011 for the made-up
session it carries) proves the session service answers, without a real WeChat user.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import BaseModel, Field

from tasks.waiters import wait_until

AUTH_PROBE = {
    "version": 1,
    "componentName": "MA",
    "interface": {"interfaceName": "qcloud.cam.auth", "para": {"id": "tcscale-probe", "skey": "tcscale-probe"}},
}


# Made once: without it every httpx.get/post builds a TLS context (~35 ms of CPU loading CA certificates),
# which serialised 101 probes through a VIP into 3-5 s. Each probe still opens its own connection.
_TLS = ssl.create_default_context()


class HealthCheck(BaseModel):
    """How to check a server's app over HTTP."""

    path: str = Field("/health", description="business app health path")
    auth_path: str = Field("/mina_auth/", description="session service path (the MA endpoint)")
    auth_health_path: str = Field("/mina_auth/health", description="session service health path")
    port: int = Field(80, ge=1, le=65535, description="the apps' HTTP port (= CLB backend port)")
    expected_status: int = Field(200, ge=100, le=599)
    timeout_seconds: float = Field(3.0, gt=0, le=60, description="one probe's HTTP timeout")


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
    """POST the MA `qcloud.cam.auth` probe; ok when the answer is a well-formed MA answer."""

    def judge(response: httpx.Response) -> Probe:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("returnCode"), int):
            detail = f"MA answer returnCode {body['returnCode']}"
            return Probe(target=url, ok=True, detail=detail, status=response.status_code, body=body)
        text = response.text[:200]
        return Probe(target=url, ok=False, detail=f"not an MA answer: {text!r}", status=response.status_code)

    return _timed(url, lambda: httpx.post(url, json=AUTH_PROBE, timeout=timeout, verify=_TLS), judge)


def probe_business(host: str, check: HealthCheck, expected_auth_url: str | None) -> Probe:
    """GET the business app's health; ok when it is up (status and code) and loaded `expected_auth_url`."""
    url = f"http://{host}:{check.port}{check.path}"

    def judge(response: httpx.Response) -> Probe:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != check.expected_status:
            detail = f"HTTP {response.status_code} (expected {check.expected_status}): {response.text[:200]}"
            return Probe(target=url, ok=False, detail=detail, status=response.status_code, body=body or None)
        loaded = body.get("authServerUrl")
        if expected_auth_url is not None and loaded != expected_auth_url:
            detail = f"authServerUrl is {loaded!r}, expected {expected_auth_url!r}"
            return Probe(target=url, ok=False, detail=detail, status=response.status_code, body=body)
        if body.get("status", "up") != "up":
            detail = f"status {body.get('status')}: {body.get('auth') or body.get('reason')}"
            return Probe(target=url, ok=False, detail=detail, status=response.status_code, body=body)
        return Probe(target=url, ok=True, detail=f"up, authServerUrl {loaded}", status=response.status_code, body=body)

    return _timed(url, lambda: httpx.get(url, timeout=check.timeout_seconds, verify=_TLS), judge)


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
