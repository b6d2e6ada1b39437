"""The wire layer, through the real SDK: signatures, routing, validation, errors, throttling, faults."""

import hashlib
import time
from datetime import UTC, datetime

import httpx
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import cvm_client, models

from sandbox.wire import tc3


def error_of(call, *args) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as info:
        call(*args)
    return info.value


def test_wrong_secret_key_is_a_signature_failure(client):
    cvm = client(cvm_client.CvmClient, secret_key="not-the-key")
    assert error_of(cvm.DescribeZones, models.DescribeZonesRequest()).code == "AuthFailure.SignatureFailure"


def test_unknown_secret_id(client):
    cvm = client(cvm_client.CvmClient, secret_id="AKIDunknown")
    assert error_of(cvm.DescribeZones, models.DescribeZonesRequest()).code == "AuthFailure.SecretIdNotFound"


def signed_post(sandbox, action: str, body: bytes, timestamp: int) -> dict:
    """A request signed by hand (as the SDK would) with a chosen timestamp."""
    config = sandbox.cloud.config
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    headers = {"content-type": "application/json", "host": sandbox.endpoint}
    canonical = "\n".join(
        [
            "POST",
            "/",
            "",
            "".join(f"{k}:{v}\n" for k, v in headers.items()),
            "content-type;host",
            hashlib.sha256(body).hexdigest(),
        ]
    )
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/cvm/tc3_request\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = tc3.signature(config.secret_key, date, "cvm", to_sign)
    auth = (
        f"TC3-HMAC-SHA256 Credential={config.secret_id}/{date}/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )
    extra = {
        "X-TC-Action": action,
        "X-TC-Version": "2017-03-12",
        "X-TC-Region": "ap-guangzhou",
        "X-TC-Timestamp": str(timestamp),
        "Authorization": auth,
    }
    return httpx.post(sandbox.url, content=body, headers={**headers, **extra}).json()["Response"]


def test_hand_signed_request_is_accepted(sandbox):
    assert signed_post(sandbox, "DescribeZones", b"{}", int(time.time()))["TotalCount"] == 2


def test_stale_timestamp_is_expired(sandbox):
    answer = signed_post(sandbox, "DescribeZones", b"{}", int(time.time()) - 600)
    assert answer["Error"]["Code"] == "AuthFailure.SignatureExpire"


def test_unsupported_region(client):
    cvm = client(cvm_client.CvmClient, region="xx-nowhere-1")
    assert error_of(cvm.DescribeZones, models.DescribeZonesRequest()).code == "UnsupportedRegion"


def test_unknown_action(client):
    cvm = client(cvm_client.CvmClient)
    assert error_of(cvm.call_json, "NoSuchThing", {}).code == "InvalidAction"


def test_unknown_parameter(client):
    cvm = client(cvm_client.CvmClient)
    assert error_of(cvm.call_json, "DescribeZones", {"Bogus": 1}).code == "UnknownParameter"


def test_missing_parameter(client):
    cvm = client(cvm_client.CvmClient)
    error = error_of(cvm.CreateKeyPair, models.CreateKeyPairRequest())
    assert error.code == "MissingParameter" and "KeyName" in error.message


def test_wrong_type_is_invalid_parameter(client):
    cvm = client(cvm_client.CvmClient)
    error = error_of(cvm.call_json, "DescribeKeyPairs", {"Limit": "ten"})
    assert error.code == "InvalidParameter" and "Limit" in error.message


def test_get_requests_are_rebuilt_and_typed(client):
    post, get = client(cvm_client.CvmClient), client(cvm_client.CvmClient, method="GET")
    for name in ("alpha", "beta"):
        request = models.CreateKeyPairRequest()
        request.KeyName, request.ProjectId = name, 0
        post.CreateKeyPair(request)
    request = models.DescribeKeyPairsRequest()
    request.Filters = [models.Filter()]
    request.Filters[0].Name, request.Filters[0].Values = "key-name", ["beta"]
    request.Limit = 5
    answer = get.DescribeKeyPairs(request)
    assert answer.TotalCount == 1 and answer.KeyPairSet[0].KeyName == "beta"


def test_throttling_returns_request_limit_exceeded(client, sandbox):
    sandbox.admin("POST", "config", {"rate_limit": 5})
    cvm = client(cvm_client.CvmClient)
    codes = []
    for _ in range(8):
        try:
            cvm.DescribeZones(models.DescribeZonesRequest())
            codes.append("ok")
        except TencentCloudSDKException as error:
            codes.append(error.code)
    assert codes[:5] == ["ok"] * 5
    assert "RequestLimitExceeded" in codes[5:]


def test_fault_rule_first_n(client, sandbox):
    sandbox.admin(
        "POST", "faults", {"service": "cvm", "action": "DescribeZones", "error_code": "InternalError", "count": 2}
    )
    cvm = client(cvm_client.CvmClient)
    assert error_of(cvm.DescribeZones, models.DescribeZonesRequest()).code == "InternalError"
    assert error_of(cvm.DescribeZones, models.DescribeZonesRequest()).code == "InternalError"
    assert cvm.DescribeZones(models.DescribeZonesRequest()).TotalCount == 2
    (rule,) = sandbox.admin("GET", "faults")
    assert rule["fired"] == 2


def test_fault_rule_armed_after_another_fired(client, sandbox):
    """A fault during an undo: a rule with `after` fires only once the rule it names has fired."""
    first = sandbox.admin("POST", "faults", {"action": "DescribeRegions", "error_code": "InternalError", "count": 1})
    rule = {"action": "DescribeZones", "error_code": "RequestLimitExceeded", "count": 1, "after": first["id"]}
    sandbox.admin("POST", "faults", rule)
    cvm = client(cvm_client.CvmClient)
    assert cvm.DescribeZones(models.DescribeZonesRequest()).TotalCount == 2  # not armed yet
    assert error_of(cvm.DescribeRegions, models.DescribeRegionsRequest()).code == "InternalError"
    assert error_of(cvm.DescribeZones, models.DescribeZonesRequest()).code == "RequestLimitExceeded"
    assert cvm.DescribeZones(models.DescribeZonesRequest()).TotalCount == 2
    assert [r["fired"] for r in sandbox.admin("GET", "faults")] == [1, 1]


def test_fault_rule_http_status(client, sandbox):
    sandbox.admin("POST", "faults", {"action": "DescribeZones", "http_status": 503, "count": 1})
    cvm = client(cvm_client.CvmClient)
    error_of(cvm.DescribeZones, models.DescribeZonesRequest())
    assert cvm.DescribeZones(models.DescribeZonesRequest()).TotalCount == 2


def test_errors_are_plain_application_json(sandbox):
    response = httpx.post(sandbox.url, content=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["Response"]["Error"]["Code"] == "AuthFailure.InvalidAuthorization"


def test_admin_refuses_unknown_routes(sandbox):
    assert httpx.get(f"{sandbox.url}/_sandbox/nothing").status_code == 404
