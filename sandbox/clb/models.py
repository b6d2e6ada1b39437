"""CLB state: load balancers, listeners, layer-4 targets, asynchronous tasks (pydantic, no rules)."""

from pydantic import BaseModel, Field

from sandbox.core.ids import new_id


class HealthCheck(BaseModel):
    health_switch: int = 1
    time_out: int = 2
    interval_time: int = 5
    health_num: int = 3
    un_health_num: int = 3
    check_type: str = "TCP"  # TCP / HTTP / CUSTOM (TCP listeners); PING / CUSTOM (UDP listeners)
    http_check_path: str | None = None
    http_code: int | None = None
    http_check_domain: str | None = None
    http_check_method: str | None = None
    http_version: str | None = None
    check_port: int | None = None


class Target(BaseModel):
    instance_id: str
    port: int
    weight: int = 10
    healthy: bool | None = None  # written by the data plane's health checker; None: not checked yet
    private_ip: str = ""  # the instance's primary private IP, copied at registration (it never changes)
    registered_time: str = ""


class Listener(BaseModel):
    listener_id: str
    listener_name: str = ""
    protocol: str  # TCP, UDP, HTTP, HTTPS, TCP_SSL, QUIC
    port: int
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    scheduler: str = "WRR"
    targets: list[Target] = Field(default_factory=list)
    created_time: str
    # DescribeTargetHealth shows a layer-4 listener's targets under one implicit rule with this id.
    location_id: str = Field(default_factory=lambda: new_id("loc"))


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
    created_at: float = 0.0  # for ordering (CreateTime has one-second resolution)
    status_time: str = ""
    bandwidth_out: int = 10  # NetworkAttributes.InternetMaxBandwidthOut (OPEN)
    running_task: str | None = None  # the task whose writes block others (ResourceInOperating)


class Task(BaseModel):
    """An asynchronous CLB operation: TaskId is the RequestId of the write; DealName for creation."""

    task_id: str
    region: str
    load_balancer_id: str
    deal_name: str | None = None
    status: int = 2  # 2 running, 0 succeeded, 1 failed
    done_at: float
    failure: str | None = None  # set by an async_failure fault
    action: str = ""  # CreateLoadBalancer, CreateListener, RegisterTargets, ...
    operation: str = ""  # the internal task name the real API shows in ResourceInOperating messages
    load_balancer_ids: list[str] = Field(default_factory=list)  # every LB a creation made
    before: LoadBalancer | None = None  # the LB before the write: restored if the task fails
    message: str | None = None


class ClbState(BaseModel):
    load_balancers: dict[str, LoadBalancer] = Field(default_factory=dict)
    tasks: dict[str, Task] = Field(default_factory=dict)
    client_tokens: dict[str, str] = Field(default_factory=dict)  # CreateLoadBalancer ClientToken -> task id
