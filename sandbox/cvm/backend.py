"""CVM state and rules: key pairs, images, instances (no HTTP here)."""

import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, Field

from sandbox.core.backend import Backend, backend
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id

KEY_NAME = re.compile(r"^[A-Za-z0-9_]{1,25}$")


class KeyPair(BaseModel):
    key_id: str
    key_name: str
    region: str
    project_id: int = 0
    description: str = ""
    public_key: str
    created_time: str
    tags: dict[str, str] = Field(default_factory=dict)


class Image(BaseModel):
    """A private image (ImageType PRIVATE_IMAGE); public images come from `catalog.PUBLIC_IMAGES`."""

    image_id: str
    region: str
    image_name: str
    image_description: str = ""
    source_instance_id: str | None = None
    os_name: str
    platform: str
    architecture: str = "x86_64"
    image_size: int = 50
    state: str = "CREATING"  # CREATING -> NORMAL | CREATEFAILED; DELETING while DeleteImages runs
    ready_at: float | None = None  # when CREATING ends
    failure: str | None = None  # set by an async_failure fault: ends CREATEFAILED with this message
    created_time: str
    tags: dict[str, str] = Field(default_factory=dict)


class Instance(BaseModel):
    """One CVM. Addresses are loopback addresses (127.0.0.0/8): the data plane binds them for real."""

    instance_id: str
    region: str
    zone: str
    project_id: int = 0
    instance_type: str
    instance_name: str
    image_id: str
    os_name: str
    platform: str  # CentOS / TencentOS / Windows: the data plane picks the guest flavour from it
    state: str = (
        "PENDING"  # PENDING, LAUNCH_FAILED, RUNNING, STOPPING, STOPPED, STARTING, REBOOTING, SHUTDOWN, TERMINATING
    )
    pending_state: str | None = None  # the state reached at `pending_at`
    pending_at: float | None = None
    failure: str | None = None  # LAUNCH_FAILED message (async_failure fault)
    latest_operation: str | None = None  # RunInstances, StopInstances, ...
    latest_operation_state: str | None = None  # SUCCESS, OPERATING, FAILED
    latest_operation_request_id: str | None = None
    latest_operation_error_msg: str = ""
    vpc_id: str
    subnet_id: str
    private_ip: str
    public_ip: str | None = None  # only with InternetMaxBandwidthOut > 0
    bandwidth_out: int = 0  # InternetAccessible.InternetMaxBandwidthOut, Mbps
    security_group_ids: list[str] = Field(default_factory=list)
    key_ids: list[str] = Field(default_factory=list)
    restrict_state: str = "NORMAL"  # NORMAL, EXPIRED, PROTECTIVELY_ISOLATED
    expired_time: str | None = None  # prepaid only
    charge_type: str = "POSTPAID_BY_HOUR"
    client_token: str | None = None
    created_time: str
    tags: dict[str, str] = Field(default_factory=dict)


class CvmState(BaseModel):
    key_pairs: dict[str, KeyPair] = Field(default_factory=dict)
    images: dict[str, Image] = Field(default_factory=dict)
    instances: dict[str, Instance] = Field(default_factory=dict)
    # ClientToken -> instance ids, for RunInstances idempotency
    client_tokens: dict[str, list[str]] = Field(default_factory=dict)


@backend
class CvmBackend(Backend):
    service = "cvm"
    state_model = CvmState
    state: CvmState

    # Key pairs
    def create_key_pair(self, region: str, name: str, project_id: int, tags: dict[str, str]) -> tuple[KeyPair, str]:
        """A new RSA key pair; the private key is returned once and never stored (as on the real cloud)."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        key = self.import_key_pair(region, name, project_id, f"{public.decode()} skey", tags)
        return key, pem

    def import_key_pair(
        self, region: str, name: str, project_id: int, public_key: str, tags: dict[str, str]
    ) -> KeyPair:
        if not name:
            raise ApiError("InvalidKeyPairNameEmpty", "The key pair name must not be empty.")
        if len(name) > 25:
            raise ApiError("InvalidKeyPairNameTooLong", f"The key pair name `{name}` is longer than 25 characters.")
        if not KEY_NAME.match(name):
            raise ApiError(
                "InvalidKeyPairNameIncludeIllegalChar",
                f"The key pair name `{name}` may contain only letters, digits and underscores.",
            )
        if any(k.key_name == name and k.region == region for k in self.state.key_pairs.values()):
            raise ApiError("InvalidKeyPairName.Duplicate", f"A key pair named `{name}` already exists.")
        if not public_key.startswith(("ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-")):
            raise ApiError("InvalidPublicKey.Malformed", "The public key is not in OpenSSH format.")
        key = KeyPair(
            key_id=new_id("skey"),
            key_name=name,
            region=region,
            project_id=project_id,
            public_key=public_key.strip(),
            created_time=self.cloud.clock.iso(),
            tags=tags,
        )
        self.state.key_pairs[key.key_id] = key
        return key

    def key_pairs(self, region: str) -> list[KeyPair]:
        return [k for k in self.state.key_pairs.values() if k.region == region]

    def key_pair(self, region: str, key_id: str) -> KeyPair:
        if not re.fullmatch(r"skey-[a-z0-9]{8}", key_id):
            raise ApiError("InvalidKeyPairId.Malformed", f"The key pair id `{key_id}` is malformed.")
        key = self.state.key_pairs.get(key_id)
        if key is None or key.region != region:
            raise ApiError("InvalidKeyPairId.NotFound", f"The key pair `{key_id}` does not exist.")
        return key
