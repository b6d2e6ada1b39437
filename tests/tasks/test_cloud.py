"""Settings, clients, typed errors, retry rules and the client-side rate limit, against the sandbox's real API."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import SecretStr
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from tasks import cloud
from tasks.cloud import (
    Clients,
    CloudError,
    CloudSettings,
    RateLimiter,
    call,
    call_json,
    clients_for,
    configure,
    is_retryable,
    make_client,
    retrying,
)

ZONE, CENTOS = "ap-guangzhou-3", "img-l8og963d"


@pytest.fixture
def settings(sandbox, monkeypatch) -> CloudSettings:
    for name in ("TCSCALE_SECRET_ID", "TCSCALE_SECRET_KEY", "TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = sandbox.cloud.config
    return CloudSettings(
        region="ap-guangzhou",
        endpoint=sandbox.endpoint,
        protocol="http",
        secret_id=config.secret_id,
        secret_key=config.secret_key,
    )


# ---- settings ------------------------------------------------------------------------------------------
def test_settings_from_env_never_show_the_key(monkeypatch):
    monkeypatch.setenv("TCSCALE_REGION", "ap-shanghai")
    monkeypatch.setenv("TCSCALE_ENDPOINT", "127.0.0.1:9100")
    monkeypatch.setenv("TCSCALE_PROTOCOL", "http")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", "AKIDexample")
    monkeypatch.setenv("TCSCALE_SECRET_KEY", "very-secret-value")
    monkeypatch.setenv("REGION", "not-this-one")
    settings = CloudSettings()
    assert (settings.region, settings.endpoint, settings.protocol, settings.secret_id) == (
        "ap-shanghai",
        "127.0.0.1:9100",
        "http",
        "AKIDexample",
    )
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert "very-secret-value" not in shown
    assert settings.credential().secret_key == "very-secret-value"


def test_missing_credentials_say_where_to_put_them(monkeypatch):
    for name in ("TCSCALE_SECRET_ID", "TCSCALE_SECRET_KEY", "TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CloudError, match="TCSCALE_SECRET_KEY or name a Prefect Secret block in TCSCALE_SECRET_KEY"):
        CloudSettings(secret_id="AKIDx").credential()


# ---- calls and errors ----------------------------------------------------------------------------------
def test_clients_call_the_sandbox_with_dicts_or_models(settings):
    clients = Clients.create(settings)
    zones = call(clients.cvm, "DescribeZones", {})
    assert ZONE in {zone.Zone for zone in zones.ZoneSet}
    assert call_json(clients.vpc, "DescribeVpcs", {})["TotalCount"] >= 1
    assert call_json(clients.clb, "DescribeLoadBalancers", {})["TotalCount"] == 0
    assert make_client("as", settings)._service == "as"


def test_sdk_errors_become_typed_cloud_errors(settings):
    cvm = make_client("cvm", settings)
    with pytest.raises(CloudError) as info:
        call(cvm, "TerminateInstances", {"InstanceIds": ["ins-00000000"]})
    error = info.value
    assert error.code == "InvalidInstanceId.NotFound" and error.action == "TerminateInstances"
    assert error.request_id and str(error).startswith("TerminateInstances: InvalidInstanceId.NotFound: ")
    assert not is_retryable(error)


def test_a_wrong_key_fails_without_showing_it(settings):
    wrong = settings.model_copy(update={"secret_key": SecretStr("wrong-key-0123456789")})
    with pytest.raises(CloudError) as info:
        call(make_client("cvm", wrong), "DescribeZones", {})
    assert info.value.code == "AuthFailure.SignatureFailure" and "wrong-key" not in str(info.value)


def test_network_errors_are_typed_and_retryable(settings):
    dead = settings.model_copy(update={"endpoint": "127.0.0.1:9", "request_timeout": 2})
    with pytest.raises(CloudError) as info:
        call(make_client("cvm", dead), "DescribeZones", {})
    assert info.value.code == "ClientNetworkError" and is_retryable(info.value)


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("RequestLimitExceeded", True),
        ("RequestLimitExceeded.UinLimitExceeded", True),
        ("ResourceInUse", True),
        ("ResourceInUse.ActivityInProgress", True),
        ("ResourceUnavailable.InstanceType", True),
        ("ResourceBusy", True),
        ("FailedOperation.ResourceInOperating", True),
        ("ServerNetworkError", True),
        ("InternalError", False),
        ("InternalError.UnknownError", False),
        ("FailedOperation", False),
        ("ResourceInsufficient", False),
        ("ResourceNotFound", False),
        ("RequestLimitExceededX", False),
        ("InvalidParameterValue", False),
    ],
)
def test_retryable_codes(code, retryable):
    assert is_retryable(CloudError(code, "m")) is retryable
    assert is_retryable(TencentCloudSDKException(code, "m")) is retryable


def test_plain_network_exceptions_are_retryable_and_bugs_are_not():
    assert is_retryable(ConnectionResetError()) and is_retryable(TimeoutError())
    assert not is_retryable(ValueError("bug")) and not is_retryable(KeyError("x"))


def test_retrying_reruns_retryable_errors_with_backoff_and_stops_at_others(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cloud, "BACKOFF_SCALE", 1.0)  # the product's schedule (the suite runs at a tenth of it)
    sleeps: list[float] = []
    attempts = iter([CloudError("ResourceBusy", "x"), CloudError("RequestLimitExceeded", "y"), "ok"])

    @retrying(first=1, sleep=sleeps.append)
    def flaky() -> str:
        result = next(attempts)
        if isinstance(result, Exception):
            raise result
        return result

    assert flaky() == "ok"
    assert 0.5 <= sleeps[0] <= 1 and 1 <= sleeps[1] <= 2  # equal jitter over exponential delays

    @retrying(sleep=sleeps.append)
    def broken() -> None:
        raise CloudError("InternalError", "z")

    with pytest.raises(CloudError, match="InternalError"):
        broken()
    assert len(sleeps) == 2  # InternalError is not retried


def test_the_backoff_scale_multiplies_every_pause_and_is_read_when_retrying(monkeypatch: pytest.MonkeyPatch):
    sleeps: list[float] = []
    attempts = iter([CloudError("ResourceBusy", "x"), CloudError("RequestLimitExceeded", "y"), "ok"])

    @retrying(first=1, sleep=sleeps.append)  # decorated before the scale changes
    def flaky() -> str:
        result = next(attempts)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(cloud, "BACKOFF_SCALE", 0.1)
    assert flaky() == "ok"
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2


def test_every_read_is_retried_on_the_one_path_and_a_write_is_left_to_its_task(settings, sandbox):
    """A throttled read (Describe*, Inquiry*, Get*) is asked again by `call()` itself, wherever it is made: no read of
    a flow escapes the retry rules. A write is not: its task's `retrying` runs its find-before-create again."""
    cvm = make_client("cvm", settings)
    throttled = {"service": "cvm", "error_code": "RequestLimitExceeded"}
    sandbox.admin("POST", "faults", {**throttled, "action": "DescribeZones", "count": 3})
    assert ZONE in {zone["Zone"] for zone in call_json(cvm, "DescribeZones", {})["ZoneSet"]}
    sandbox.admin("POST", "faults", {**throttled, "action": "CreateKeyPair", "count": 1})
    with pytest.raises(CloudError, match="RequestLimitExceeded"):
        call(cvm, "CreateKeyPair", {"KeyName": "once", "ProjectId": 0})


def test_a_read_out_of_retries_is_not_retried_again_by_the_task_around_it(settings, sandbox):
    """Retried reads inside a retried task would multiply their attempts (6 x 6): a read that ran out of its own is
    not asked again around it."""
    cvm = make_client("cvm", settings)
    sandbox.admin("POST", "faults", {"service": "cvm", "action": "DescribeZones", "error_code": "RequestLimitExceeded"})
    tries: list[int] = []

    @retrying()
    def find() -> object:
        tries.append(1)
        return call_json(cvm, "DescribeZones", {})

    with pytest.raises(CloudError, match="RequestLimitExceeded") as info:
        find()
    (rule,) = sandbox.admin("GET", "faults")
    assert len(tries) == 1 and rule["fired"] == 6 and is_retryable(info.value)  # a waiter still polls on


# ---- the rate limit -----------------------------------------------------------------------------------
def test_the_limiter_never_lets_more_than_rate_into_any_window():
    limiter = RateLimiter(rate=10, window=0.2)
    sent: list[float] = []
    lock = threading.Lock()

    def send(_: int) -> None:
        with limiter.slot("cvm", "DescribeInstances"):
            with lock:
                sent.append(time.monotonic())
            time.sleep(0.01)  # the request in flight

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(35)))
    sent.sort()
    assert time.monotonic() - started >= 0.6  # 35 requests at 10 per 0.2 s: at least 3 full windows
    for index in range(len(sent) - 10):
        assert sent[index + 10] - sent[index] >= 0.2 - 1e-3
    # other actions have their own windows
    with limiter.slot("cvm", "DescribeImages") as waited:
        assert waited < 0.05


def test_a_burst_through_call_never_trips_the_servers_throttle(settings, sandbox):
    sandbox.admin("POST", "config", {"rate_limit": 20})  # the real API's per-action limit
    cvm = make_client("cvm", settings)
    raw = make_client("cvm", settings.model_copy(update={"rate_limit": 1000}))  # effectively unlimited

    sandbox.admin("POST", "stats/reset")
    with ThreadPoolExecutor(16) as pool:
        [f.exception() for f in [pool.submit(call, raw, "DescribeRegions", {}) for _ in range(60)]]  # (reads retry)
    assert sandbox.admin("GET", "stats")["errors"].get("RequestLimitExceeded")

    sandbox.admin("POST", "stats/reset")
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: call(cvm, "DescribeZones", {}), range(50)))
    assert len(results) == 50 and "RequestLimitExceeded" not in sandbox.admin("GET", "stats")["errors"]
    assert time.monotonic() - started >= 2.0  # 50 at 15/s


def test_clients_for_follows_the_environment_or_configured_settings(sandbox, settings, monkeypatch):
    monkeypatch.setenv("TCSCALE_ENDPOINT", sandbox.endpoint)
    monkeypatch.setenv("TCSCALE_PROTOCOL", "http")
    monkeypatch.setenv("TCSCALE_SECRET_ID", settings.secret_id)
    monkeypatch.setenv("TCSCALE_SECRET_KEY", settings.secret_key.get_secret_value())
    first = clients_for("ap-guangzhou")
    assert clients_for("ap-guangzhou") is first and clients_for() is first  # default region: ap-guangzhou
    assert call(first.cvm, "DescribeZones", {}).TotalCount >= 1
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(clients_for, "ap-guangzhou").result() is not first  # one set per thread
    monkeypatch.setenv("TCSCALE_SECRET_KEY", "rotated-key-000000000000")
    rotated = clients_for("ap-guangzhou")
    assert rotated is not first and rotated.cvm.credential.secret_key == "rotated-key-000000000000"
    try:
        configure(settings.model_copy(update={"region": "ap-shanghai"}))
        pinned = clients_for()
        assert (
            pinned.cvm.region == "ap-shanghai" and pinned.cvm.credential.secret_key == settings.credential().secret_key
        )
    finally:
        configure(None)
    assert clients_for("ap-guangzhou") is rotated
