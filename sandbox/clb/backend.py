"""CLB state and rules: load balancers, listeners, layer-4 targets, and their asynchronous tasks."""

from pydantic import BaseModel, Field

from sandbox.core.backend import Backend, backend


class HealthCheck(BaseModel):
    health_switch: int = 1
    time_out: int = 2
    interval_time: int = 5
    health_num: int = 3
    un_health_num: int = 3
    check_type: str = "TCP"  # TCP / HTTP / CUSTOM
    http_check_path: str | None = None
    http_code: int | None = None


class Target(BaseModel):
    instance_id: str
    port: int
    weight: int = 10
    healthy: bool | None = None  # written by the data plane's health checker; None: not checked yet


class Listener(BaseModel):
    listener_id: str
    listener_name: str = ""
    protocol: str  # TCP, UDP, HTTP, HTTPS, TCP_SSL, QUIC
    port: int
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    scheduler: str = "WRR"
    targets: list[Target] = Field(default_factory=list)
    created_time: str


class LoadBalancer(BaseModel):
    load_balancer_id: str
    region: str
    load_balancer_name: str
    load_balancer_type: str  # OPEN / INTERNAL
    forward: int = 1
    vpc_id: str
    subnet_id: str | None = None  # INTERNAL only
    project_id: int = 0
    vip: str  # loopback address: from the subnet (INTERNAL) or the sandbox's public pool (OPEN)
    status: int = 0  # 0 creating, 1 normal
    ready_at: float | None = None
    created_time: str
    listeners: dict[str, Listener] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)


class Task(BaseModel):
    """An asynchronous CLB operation: TaskId is the RequestId of the write; DealName for creation."""

    task_id: str
    region: str
    load_balancer_id: str
    deal_name: str | None = None
    status: int = 2  # 2 running, 0 succeeded, 1 failed
    done_at: float
    failure: str | None = None  # set by an async_failure fault


class ClbState(BaseModel):
    load_balancers: dict[str, LoadBalancer] = Field(default_factory=dict)
    tasks: dict[str, Task] = Field(default_factory=dict)


@backend
class ClbBackend(Backend):
    service = "clb"
    state_model = ClbState
    state: ClbState
