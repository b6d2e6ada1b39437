"""Real Tencent SDK clients pointed at a sandbox (tests only)."""

from typing import Any

from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from sandbox.server import EmbeddedSandbox

REGION = "ap-guangzhou"


def sdk_client(
    server: EmbeddedSandbox,
    client_class: type,
    region: str = REGION,
    method: str = "POST",
    secret_id: str | None = None,
    secret_key: str | None = None,
) -> Any:
    """`sdk_client(server, CvmClient)`: a sync or asyncio client class of the real SDK."""
    config = server.cloud.config
    cred = credential.Credential(secret_id or config.secret_id, secret_key or config.secret_key)
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=server.endpoint, reqMethod=method))
    return client_class(cred, region, profile)
