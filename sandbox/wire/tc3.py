"""Server-side verification of TC3-HMAC-SHA256, Tencent Cloud API 3.0's request signature."""

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sandbox.core.errors import ApiError

MAX_SKEW_SECONDS = 300
_AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/]+)/tc3_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class SignedRequest:
    secret_id: str
    service: str


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signature(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def verify(
    method: str,
    headers: dict[str, str],
    query: str,
    body: bytes,
    secrets: dict[str, str],
    now: float,
) -> SignedRequest:
    """Check the Authorization header of a request; `headers` has lower-case names."""
    match = _AUTH.match(headers.get("authorization", ""))
    if match is None:
        raise ApiError("AuthFailure.InvalidAuthorization", "The Authorization header is malformed.")
    secret_id, date, service = match["id"], match["date"], match["service"]
    try:
        timestamp = int(headers.get("x-tc-timestamp", ""))
    except ValueError:
        raise ApiError("MissingParameter", "The request is missing a valid `X-TC-Timestamp` header.") from None
    if abs(now - timestamp) > MAX_SKEW_SECONDS:
        raise ApiError(
            "AuthFailure.SignatureExpire",
            f"Signature expired. Timestamp is {timestamp}, server time is {int(now)}: they must be within "
            f"{MAX_SKEW_SECONDS} seconds of each other.",
        )
    if datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d") != date:
        raise ApiError("AuthFailure.InvalidAuthorization", "The credential date does not match X-TC-Timestamp.")
    secret_key = secrets.get(secret_id)
    if secret_key is None:
        raise ApiError(
            "AuthFailure.SecretIdNotFound", "The SecretId is not found, please ensure that your SecretId is correct."
        )
    signed = match["signed"].split(";")
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed)
    canonical_request = "\n".join(
        [
            method,
            "/",
            query if method == "GET" else "",
            canonical_headers,
            match["signed"],
            hashlib.sha256(b"" if method == "GET" else body).hexdigest(),
        ]
    )
    string_to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(timestamp),
            f"{date}/{service}/tc3_request",
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    if not hmac.compare_digest(signature(secret_key, date, service, string_to_sign), match["sig"]):
        raise ApiError(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        )
    return SignedRequest(secret_id=secret_id, service=service)
