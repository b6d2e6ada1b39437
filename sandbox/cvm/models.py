"""CVM state: key pairs, images, instances (pydantic, persisted as JSON; no rules here)."""

from pydantic import BaseModel, Field


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
    """A private image (ImageType PRIVATE_IMAGE); public images come from `catalog.PUBLIC_IMAGES`.

    `CvmBackend.image()` also returns public images in this shape (image_type PUBLIC_IMAGE, never stored).
    """

    image_id: str
    region: str
    image_name: str
    image_description: str = ""
    source_instance_id: str | None = None
    os_name: str
    platform: str
    architecture: str = "x86_64"
    image_size: int = 50
    state: str = "CREATING"  # CREATING -> NORMAL | CREATEFAILED
    ready_at: float | None = None  # when CREATING ends
    failure: str | None = None  # set by an async_failure fault: ends CREATEFAILED with this message
    created_time: str
    tags: dict[str, str] = Field(default_factory=dict)
    image_type: str = "PRIVATE_IMAGE"  # PUBLIC_IMAGE for catalog images handed out by CvmBackend.image()
    # The source server's login password, salted and hashed, for `LoginSettings.KeepImageLogin`. Never
    # dumped: `GET /_sandbox/state` must not show it; CvmBackend persists it in a separate file.
    password_hash: str | None = Field(None, exclude=True, repr=False)


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
    # PENDING, LAUNCH_FAILED, RUNNING, STOPPING, STOPPED, STARTING, REBOOTING, TERMINATING; and TERMINATED,
    # only ever seen by `instance.state` listeners: the instance is removed from the state at that moment.
    state: str = "PENDING"
    pending_state: str | None = None  # the state reached at `pending_at`
    pending_at: float | None = None
    failure: str | None = None  # the pending operation ends FAILED with this message (async_failure fault)
    previous_state: str | None = None  # where a failed Stop/Start/Reboot/Terminate returns to
    latest_operation: str | None = None  # RunInstances, StopInstances, ...
    latest_operation_state: str | None = None  # SUCCESS, OPERATING, FAILED
    latest_operation_request_id: str | None = None
    latest_operation_error_msg: str = ""
    vpc_id: str
    subnet_id: str
    private_ip: str
    public_ip: str | None = None  # only with InternetMaxBandwidthOut > 0
    bandwidth_out: int = 0  # InternetAccessible.InternetMaxBandwidthOut, Mbps
    internet_charge_type: str = "TRAFFIC_POSTPAID_BY_HOUR"
    security_group_ids: list[str] = Field(default_factory=list)
    key_ids: list[str] = Field(default_factory=list)
    restrict_state: str = "NORMAL"  # NORMAL, EXPIRED, PROTECTIVELY_ISOLATED
    expired_time: str | None = None  # prepaid only
    charge_type: str = "POSTPAID_BY_HOUR"
    renew_flag: str | None = None  # prepaid only
    client_token: str | None = None
    created_time: str
    tags: dict[str, str] = Field(default_factory=dict)
    uuid: str = ""
    host_name: str = ""
    system_disk_type: str = "CLOUD_PREMIUM"
    system_disk_size: int = 50
    system_disk_id: str = ""
    disable_api_termination: bool = False
    # `LoginSettings.Password`, salted and hashed (sandbox.cvm.passwords); never the password itself, never
    # dumped (`GET /_sandbox/state` must not show it): CvmBackend persists it in a separate file.
    password_hash: str | None = Field(None, exclude=True, repr=False)


class CvmState(BaseModel):
    key_pairs: dict[str, KeyPair] = Field(default_factory=dict)
    images: dict[str, Image] = Field(default_factory=dict)
    instances: dict[str, Instance] = Field(default_factory=dict)
    # "<region>/<ClientToken>" -> instance ids, for RunInstances idempotency
    client_tokens: dict[str, list[str]] = Field(default_factory=dict)
