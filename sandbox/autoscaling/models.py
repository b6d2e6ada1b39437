"""Auto Scaling state: launch configurations, scaling groups and their instances, activities, scheduled
actions, scaling policies (pydantic, persisted as JSON; no rules here)."""

from pydantic import BaseModel, Field


class LaunchConfiguration(BaseModel):
    launch_configuration_id: str
    region: str
    name: str
    project_id: int = 0
    image_id: str
    instance_types: list[str]  # InstanceType is the first; InstanceTypes may list up to 10
    instance_types_check_policy: str = "ANY"
    system_disk: dict[str, object] = Field(default_factory=lambda: {"DiskType": "CLOUD_PREMIUM", "DiskSize": 50})
    data_disks: list[dict[str, object]] = Field(default_factory=list)
    bandwidth_out: int = 0
    internet_charge_type: str = "TRAFFIC_POSTPAID_BY_HOUR"
    public_ip_assigned: bool = False
    key_ids: list[str] = Field(default_factory=list)
    keep_image_login: bool = False
    # LoginSettings.Password, salted and hashed (sandbox.cvm.passwords); never dumped, so a restart forgets it
    password_hash: str | None = Field(None, exclude=True, repr=False)
    security_group_ids: list[str] = Field(default_factory=list)
    user_data: str | None = None
    instance_charge_type: str = "POSTPAID_BY_HOUR"
    instance_name: str | None = None  # InstanceNameSettings.InstanceName
    instance_name_style: str = "ORIGINAL"
    host_name: str | None = None
    instance_tags: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    cam_role_name: str = ""
    disk_type_policy: str = "ORIGINAL"
    version_number: int = 1
    created_time: str
    updated_time: str


class ForwardLb(BaseModel):
    load_balancer_id: str
    listener_id: str
    targets: list[tuple[int, int]]  # (Port, Weight)
    location_id: str | None = None
    region: str = ""


class GroupInstance(BaseModel):
    """An instance of a scaling group (DescribeAutoScalingInstances)."""

    instance_id: str
    group_id: str
    launch_configuration_id: str
    zone: str
    instance_type: str
    creation_type: str  # AUTO_CREATION / MANUAL_ATTACHING
    life_cycle_state: str  # CREATING, ATTACHING_LB, IN_SERVICE, DETACHING_LB, TERMINATING, DETACHING, ...
    protected: bool = False
    add_time: str
    added_at: float  # for the termination policies (AddTime has one-second resolution)
    version_number: int = 1


class AutoScalingGroup(BaseModel):
    group_id: str
    region: str
    name: str
    launch_configuration_id: str
    min_size: int
    max_size: int
    desired: int
    default_cooldown: int = 300
    vpc_id: str
    subnet_ids: list[str]
    zones: list[str] = Field(default_factory=list)
    project_id: int = 0
    forward_lbs: list[ForwardLb] = Field(default_factory=list)
    load_balancer_ids: list[str] = Field(default_factory=list)
    termination_policy: str = "OLDEST_INSTANCE"
    retry_policy: str = "IMMEDIATE_RETRY"
    zones_check_policy: str = "ANY"
    multi_zone_subnet_policy: str = "PRIORITY"
    health_check_type: str = "CVM"
    grace_period: int = 0
    service_settings: dict[str, object] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    created_time: str
    created_at: float = 0.0
    instances: dict[str, GroupInstance] = Field(default_factory=dict)
    # the engine's bookkeeping
    failures: int = 0  # consecutive failed scale-outs (RetryPolicy)
    retry_at: float | None = None  # no new scale-out before this (INCREMENTAL_INTERVALS), None: now
    retry_blocked: bool = False  # NO_RETRY after a failure / IMMEDIATE_RETRY after too many: until a user call
    cause: str | None = None  # why the next reconciliation happens (a scheduled action, an alarm), if not a user
    cooldown_until: float = 0.0  # scaling policies do not fire before this


class Work(BaseModel):
    """One instance's part of an activity, stepped by the engine."""

    instance_id: str | None = None  # None until launched
    step: str  # launch, wait_running, register, wait_register, deregister, wait_deregister, terminate,
    # wait_terminated, done, failed
    subnet_id: str | None = None
    message: str = ""
    tasks: list[str] = Field(default_factory=list)  # CLB task ids this step waits for
    bound: list[str] = Field(default_factory=list)  # "<lb>/<listener>" registered (or deregistered) so far
    terminate_after: bool = False  # SCALE_IN / REMOVE of an AUTO_CREATION instance
    release: bool = False  # the instance leaves the group when the work ends


class Activity(BaseModel):
    activity_id: str
    group_id: str
    region: str
    activity_type: str  # SCALE_OUT, SCALE_IN, ATTACH_INSTANCES, DETACH_INSTANCES, REMOVE_INSTANCES
    status_code: str = "INIT"  # INIT, RUNNING, SUCCESSFUL, PARTIALLY_SUCCESSFUL, FAILED, CANCELLED
    status_message: str = ""
    status_message_simplified: str = ""
    cause: str
    description: str
    created_time: str
    created_at: float
    start_time: str = ""
    end_time: str = ""
    work: list[Work] = Field(default_factory=list)
    detailed: list[dict[str, str]] = Field(default_factory=list)  # DetailedStatusMessageSet


class ScheduledAction(BaseModel):
    scheduled_action_id: str
    region: str
    group_id: str
    name: str
    min_size: int
    max_size: int
    desired: int
    start_time: str  # as given: 2026-12-01T11:00:00+08:00
    end_time: str = ""
    recurrence: str = ""
    disable_update_desired: bool = False
    created_time: str
    next_at: float | None  # the next firing (epoch seconds); None: done
    fired: int = 0


class MetricAlarm(BaseModel):
    comparison_operator: str
    metric_name: str
    threshold: int
    period: int
    continuous_time: int
    statistic: str = "AVERAGE"
    precise_threshold: float | None = None


class ScalingPolicy(BaseModel):
    policy_id: str
    region: str
    group_id: str
    name: str
    policy_type: str = "SIMPLE"  # SIMPLE / TARGET_TRACKING
    adjustment_type: str | None = None
    adjustment_value: int | None = None
    cooldown: int | None = None
    metric_alarm: MetricAlarm | None = None
    predefined_metric_type: str | None = None
    target_value: int | None = None
    estimated_instance_warmup: int | None = None
    disable_scale_in: bool | None = None
    notification_user_group_ids: list[str] = Field(default_factory=list)
    created_at: float = 0.0
    evaluated_until: float = 0.0  # the end of the last evaluated period
    breaches: int = 0  # consecutive periods over the threshold (SIMPLE) / above target (TARGET_TRACKING)
    lows: int = 0  # TARGET_TRACKING: consecutive minutes below 80 % of the target


class AsState(BaseModel):
    launch_configurations: dict[str, LaunchConfiguration] = Field(default_factory=dict)
    groups: dict[str, AutoScalingGroup] = Field(default_factory=dict)
    activities: dict[str, Activity] = Field(default_factory=dict)
    scheduled_actions: dict[str, ScheduledAction] = Field(default_factory=dict)
    policies: dict[str, ScalingPolicy] = Field(default_factory=dict)
