"""Talking to Tencent Cloud: settings, SDK clients, a per-action rate limit, typed errors and retry rules.

Every API call of the product goes through `call()`, so every call is rate limited (the real API
throttles each action at ~20 requests/s), every read is retried, and every SDK error becomes a `CloudError` whose
code decides whether a retry can help (DESIGN.md §3, after Terraform's Tencent provider).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from tencentcloud.common import credential
from tencentcloud.common.abstract_client import AbstractClient
from tencentcloud.common.abstract_model import AbstractModel
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

_T = TypeVar("_T")
Service = Literal["cvm", "clb", "vpc", "as", "monitor"]

# service -> (module of the sync client, class name)
_CLIENTS: dict[str, tuple[str, str]] = {
    "cvm": ("tencentcloud.cvm.v20170312.cvm_client", "CvmClient"),
    "clb": ("tencentcloud.clb.v20180317.clb_client", "ClbClient"),
    "vpc": ("tencentcloud.vpc.v20170312.vpc_client", "VpcClient"),
    "as": ("tencentcloud.autoscaling.v20180419.autoscaling_client", "AutoscalingClient"),
    "monitor": ("tencentcloud.monitor.v20180724.monitor_client", "MonitorClient"),
}


class CloudSettings(BaseSettings):
    """Where and as whom to call Tencent Cloud. Env vars `TCSCALE_*` (or Tencent's own `TENCENTCLOUD_*`).

    Credentials come either directly (`secret_id` / `secret_key`) or from Prefect `Secret` blocks
    named by `secret_id_block` / `secret_key_block`. The key is a `SecretStr`: never in repr or logs.
    """

    # env_ignore_empty: prefect.yaml passes TCSCALE_ENDPOINT= (empty) to the runs of a real cloud: the default applies
    model_config = SettingsConfigDict(
        env_prefix="TCSCALE_", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    region: str = Field("ap-guangzhou", validation_alias=AliasChoices("TCSCALE_REGION", "TENCENTCLOUD_REGION"))
    endpoint: str | None = Field(
        None, description="host:port override (no scheme), e.g. the sandbox's 127.0.0.1:9100; None: Tencent's own"
    )
    protocol: Literal["http", "https"] = "https"
    secret_id: str | None = Field(None, validation_alias=AliasChoices("TCSCALE_SECRET_ID", "TENCENTCLOUD_SECRET_ID"))
    secret_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TCSCALE_SECRET_KEY", "TENCENTCLOUD_SECRET_KEY")
    )
    secret_id_block: str | None = Field(None, description="name of a Prefect Secret block holding the SecretId")
    secret_key_block: str | None = Field(None, description="name of a Prefect Secret block holding the SecretKey")
    rate_limit: float = Field(15.0, gt=0, description="client-side requests/s per action (the API allows ~20)")
    request_timeout: int = Field(30, gt=0, description="HTTP timeout of one API request, seconds")

    def credential(self) -> credential.Credential:
        secret_id = self.secret_id or _load_secret_block(self.secret_id_block, "SecretId")
        if self.secret_key is not None:
            secret_key = self.secret_key.get_secret_value()
        else:
            secret_key = _load_secret_block(self.secret_key_block, "SecretKey")
        return credential.Credential(secret_id, secret_key)


def _load_secret_block(block_name: str | None, what: str) -> str:
    if not block_name:
        raise CloudError(
            "ClientConfigError",
            f"no {what}: set TCSCALE_{'SECRET_ID' if what == 'SecretId' else 'SECRET_KEY'} or name a Prefect "
            f"Secret block in TCSCALE_{'SECRET_ID_BLOCK' if what == 'SecretId' else 'SECRET_KEY_BLOCK'}",
        )
    from prefect.blocks.system import Secret  # imported late: loading a block needs a Prefect API

    value = Secret.load(block_name).get()
    if not isinstance(value, str) or not value:
        raise CloudError("ClientConfigError", f"Prefect Secret block {block_name!r} does not hold a {what} string")
    return value


def make_client(service: Service, settings: CloudSettings | None = None, region: str | None = None) -> AbstractClient:
    """A synchronous SDK client of `service` ("cvm", "clb", "vpc", "as" or "monitor")."""
    settings = settings or CloudSettings()
    module_name, class_name = _CLIENTS[service]
    client_class = getattr(importlib.import_module(module_name), class_name)
    http = HttpProfile(
        protocol=settings.protocol,
        endpoint=settings.endpoint,
        reqTimeout=settings.request_timeout,
        keepAlive=True,
    )
    client = client_class(settings.credential(), region or settings.region, ClientProfile(httpProfile=http))
    client.tcscale_rate_limit = settings.rate_limit  # read by call(): which shared limiter applies
    return client


@dataclass
class Clients:
    """One client per service, made once (each keeps its own HTTP connection pool)."""

    cvm: AbstractClient
    clb: AbstractClient
    vpc: AbstractClient
    autoscaling: AbstractClient
    monitor: AbstractClient

    @classmethod
    def create(cls, settings: CloudSettings | None = None, region: str | None = None) -> Clients:
        settings = settings or CloudSettings()
        return cls(*(make_client(service, settings, region) for service in ("cvm", "clb", "vpc", "as", "monitor")))


_configured: CloudSettings | None = None
_per_thread = threading.local()


def configure(settings: CloudSettings | None) -> None:
    """Pin the settings `clients_for` uses in this process (None: read the environment at each call again)."""
    global _configured
    _configured = settings


def current_settings() -> CloudSettings:
    return _configured or CloudSettings()


def clients_for(region: str | None = None) -> Clients:
    """Clients for `region` (default: the settings' region), made once per thread and per settings.

    Settings come from `configure()` or else the environment, read at each call (cheap), so a
    changed endpoint or key takes effect at once. One set per thread: an SDK client's HTTP pool
    holds 10 connections, and 100 threads sharing one would keep discarding them.
    """
    settings = current_settings()
    region = region or settings.region
    secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
    key = (
        region,
        settings.endpoint,
        settings.protocol,
        settings.secret_id,
        settings.secret_id_block,
        settings.secret_key_block,
        hashlib.sha256(secret.encode()).hexdigest(),  # the key itself is never kept as a dict key
        settings.rate_limit,
        settings.request_timeout,
    )
    cache: dict[tuple[object, ...], Clients] = _per_thread.__dict__.setdefault("clients", {})
    if key not in cache:
        cache[key] = Clients.create(settings, region)
    return cache[key]


# --- client-side rate limit ---------------------------------------------------------------------------


class RateLimiter:
    """At most `rate` requests per one-second window per (service, action), as the server counts them.

    The server counts a request when it arrives, somewhere between our send and our receipt of its
    answer, so counting sends is not enough (latency jitter bunches arrivals: 15 sends/s were seen
    as 21/s by the sandbox). A request therefore holds its slot while in flight and for one window
    after its answer: any `window` the server looks at then holds at most `rate` of our requests,
    whatever the latency. Thread-safe; one instance is shared by every task of the process.
    """

    def __init__(self, rate: float = 15.0, window: float = 1.0) -> None:
        self.rate = rate
        self.window = window
        self.limit = max(1, int(rate * window))
        self._in_flight: dict[tuple[str, str], int] = {}
        self._finished: dict[tuple[str, str], deque[float]] = {}
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def slot(self, service: str, action: str) -> Iterator[float]:
        """Hold a slot around one request; yields the seconds waited for it."""
        waited = self.acquire(service, action)
        try:
            yield waited
        finally:
            self.release(service, action)

    def acquire(self, service: str, action: str) -> float:
        """Wait for a slot (then call `release` once the answer is in); return the seconds waited."""
        key = (service, action)
        started = time.monotonic()
        with self._changed:
            while True:
                now = time.monotonic()
                finished = self._finished.setdefault(key, deque())
                while finished and now - finished[0] >= self.window:
                    finished.popleft()
                if self._in_flight.get(key, 0) + len(finished) < self.limit:
                    self._in_flight[key] = self._in_flight.get(key, 0) + 1
                    return now - started
                # wake when the oldest answer leaves the window, or when a request in flight ends
                self._changed.wait(finished[0] + self.window - now if finished else None)

    def release(self, service: str, action: str) -> None:
        key = (service, action)
        with self._changed:
            self._in_flight[key] -= 1
            self._finished.setdefault(key, deque()).append(time.monotonic())
            self._changed.notify_all()


_shared_limiters: dict[float, RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(rate: float = 15.0) -> RateLimiter:
    """The process-wide limiter for `rate`: every client made with the same rate limit shares its windows."""
    with _shared_lock:
        return _shared_limiters.setdefault(rate, RateLimiter(rate))


# --- calls and errors ------------------------------------------------------------------------------------


class CloudError(Exception):
    """A failed Tencent Cloud call, with the cloud's own code and message (never credentials)."""

    def __init__(self, code: str, message: str, request_id: str | None = None, action: str | None = None) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.action = action
        where = f"{action}: " if action else ""
        rid = f" (RequestId {request_id})" if request_id else ""
        super().__init__(f"{where}{code}: {message}{rid}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable for Prefect results
        return (CloudError, (self.code, self.message, self.request_id, self.action))


def _request_model(client: AbstractClient, action: str, params: dict[str, Any]) -> AbstractModel:
    models = importlib.import_module(type(client).__module__.rsplit(".", 1)[0] + ".models")
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    return request


READ_PREFIXES = ("Describe", "Inquiry", "Get")  # actions that change nothing


def call(
    client: AbstractClient, action: str, request: AbstractModel | dict[str, Any], limiter: RateLimiter | None = None
) -> Any:
    """Call `action` (e.g. "DescribeInstances") with a request model or a plain dict of parameters.

    Returns the SDK's response model; raises `CloudError` for every SDK failure. A read is retried here (`retrying`),
    wherever it is made: asking again changes nothing. A write is left to its task's `retrying`, which runs its
    find-before-create again (an attempt whose answer was lost may have made the resource).
    """
    model = _request_model(client, action, request) if isinstance(request, dict) else request
    limiter = limiter or shared_limiter(getattr(client, "tcscale_rate_limit", 15.0))

    def send() -> Any:
        try:
            with limiter.slot(client._service, action):
                return getattr(client, action)(model)
        except TencentCloudSDKException as exc:
            message = exc.message.decode("utf-8", "replace") if isinstance(exc.message, bytes) else str(exc.message)
            raise CloudError(str(exc.code), message[:500], exc.requestId, action) from None

    return retrying()(send)() if action.startswith(READ_PREFIXES) else send()


def call_json(
    client: AbstractClient, action: str, request: AbstractModel | dict[str, Any], limiter: RateLimiter | None = None
) -> dict[str, Any]:
    """`call()`, with the response as a plain dict (the API's own field names)."""
    return json.loads(call(client, action, request, limiter).to_json_string())


# --- retries ---------------------------------------------------------------------------------------------

RETRYABLE_PREFIXES = ("RequestLimitExceeded", "ResourceInUse", "ResourceUnavailable", "ResourceBusy")
RETRYABLE_CODES = frozenset(
    {
        "FailedOperation.ResourceInOperating",
        "ResourceInUse.ActivityInProgress",
        "ClientNetworkError",  # the SDK's wrapper of connection errors and timeouts
        "ServerNetworkError",  # a non-200 HTTP answer (gateway trouble)
    }
)


def is_retryable(exc: BaseException) -> bool:
    """Can trying again help? Throttling, busy resources and network errors: yes. `InternalError`: no."""
    if isinstance(exc, CloudError):
        code = exc.code
    elif isinstance(exc, TencentCloudSDKException):
        code = str(exc.code)
    else:
        return isinstance(exc, (ConnectionError, TimeoutError))
    return code in RETRYABLE_CODES or any(code == p or code.startswith(p + ".") for p in RETRYABLE_PREFIXES)


# A connection never made sent nothing (urllib3's names in the SDK's ClientNetworkError message)
_NEVER_SENT = ("NewConnectionError", "ConnectTimeoutError")


def answer_lost(exc: BaseException) -> bool:
    """Did a request perhaps reach the cloud without its answer reaching us (timed out, connection dropped, a
    gateway's non-200)? Then the change it asks for may still take effect, later. A refused connection sent nothing."""
    if not isinstance(exc, CloudError):
        return False
    never_sent = any(name in exc.message for name in _NEVER_SENT)
    return exc.code == "ServerNetworkError" or (exc.code == "ClientNetworkError" and not never_sent)


def lost_write_window() -> float:
    """Seconds after it was sent until which a write whose answer was lost may still take effect. Tencent's API states
    no bound: tcscale assumes the cloud applies a request, if ever, within one more request timeout after the client
    gave up on it (twice TCSCALE_REQUEST_TIMEOUT, 60 s by default)."""
    return 2.0 * current_settings().request_timeout


def jittered(delay: float, rng: random.Random | None = None) -> float:
    """`delay` spread uniformly over [delay/2, delay] ("equal jitter")."""
    return delay / 2 + (rng or random).uniform(0, delay / 2)


# Every retry's pause is its scheduled delay times this. 1.0 (the schedule `retrying` documents) in the product;
# the test suite lowers it (tests/conftest.py) so fault cases that succeed by retry do not wait real seconds.
# Read at each pause, not when a function is decorated.
BACKOFF_SCALE = 1.0


def retrying(
    attempts: int = 6,
    first: float = 1.0,
    cap: float = 30.0,
    retry_if: Callable[[BaseException], bool] = is_retryable,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Decorator: re-run the whole function (its find-before-create included) on errors `retry_if` accepts.

    Why not Prefect's task `retries`: a retry must run the find-before-create again (an earlier attempt may
    have made the resource and lost the answer), and in Prefect 3.8 a failed task attempt inside a transaction
    rolls the whole transaction back before its retry starts. Put it under `@task`: `@task(...)` / `@retrying()`.
    """

    def decorate(fn: Callable[..., _T]) -> Callable[..., _T]:
        @functools.wraps(fn)
        def attempt(*args: Any, **kwargs: Any) -> _T:
            for number in range(1, attempts + 1):
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    if number == attempts or not retry_if(exc) or getattr(exc, "retries_spent", False):
                        if number == attempts:  # ran out: not retried again by a `retrying` around it (6 x 6)
                            exc.retries_spent = True  # type: ignore[attr-defined]
                        raise
                    delay = jittered(min(cap, first * 2 ** (number - 1))) * BACKOFF_SCALE
                    run_logger().warning(
                        "%s failed (%s), attempt %d/%d; retrying in %.1fs", fn.__name__, exc, number, attempts, delay
                    )
                    sleep(delay)
            raise AssertionError("unreachable")

        return attempt

    return decorate


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run's logger inside a run, else the `tcscale.retry` logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("tcscale.retry")
