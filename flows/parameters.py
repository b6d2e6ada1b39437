"""Flow parameters: pydantic models that are also the Prefect UI's run form."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from tasks.clb import HealthCheckSpec
from tasks.health import HealthCheck
from tasks.models import RuntimeProfile, SshSettings, runtime_profile

Tier = Literal["session", "business"]


class ServerSelector(BaseModel):
    """One way to name servers: by instance id(s), or by tag, or by name."""

    instance_ids: list[str] = Field(default_factory=list, description="explicit instance ids")
    tag_key: str | None = Field(None, description="select by this tag ...")
    tag_value: str | None = Field(None, description="... having this value")
    name: str | None = Field(None, description="select by instance name")

    @model_validator(mode="after")
    def one_way(self) -> ServerSelector:
        ways = [bool(self.instance_ids), self.tag_key is not None, self.name is not None]
        if sum(ways) != 1:
            raise ValueError("name servers one way: instance_ids, or tag_key + tag_value, or name")
        if (self.tag_key is None) != (self.tag_value is None):
            raise ValueError("tag_key and tag_value go together")
        return self

    def describe(self) -> str:
        if self.instance_ids:
            return ", ".join(self.instance_ids)
        if self.tag_key is not None:
            return f"tag {self.tag_key}={self.tag_value}"
        return f"name {self.name}"


class ImageOptions(BaseModel):
    name: str | None = Field(None, description="image name; default tcscale-<tier>-<run>")
    reuse: bool = Field(False, description="launch from an existing NORMAL image of that name instead of a new one")


class LoadBalancerOptions(BaseModel):
    load_balancer_id: str | None = Field(None, description="use this existing CLB; None: create one")
    name: str | None = Field(None, description="name of the CLB to create; default tcscale-<tier>")
    listener_port: int = Field(80, ge=1, le=65535, description="the CLB's TCP listener port")
    backend_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="the servers' port behind it; default: the app's real port (session service 80; business app "
        "by runtime: node 5757, tomcat 8080, IIS 80)",
    )
    health_check: HealthCheckSpec = Field(default_factory=HealthCheckSpec)


class Timeouts(BaseModel):
    """Deadlines of the cloud's own waits, seconds."""

    image: float = Field(1800, gt=0, description="image CREATING -> NORMAL (Windows images are slow)")
    launch: float = Field(600, gt=0, description="servers PENDING -> RUNNING and app answering")
    clb: float = Field(300, gt=0, description="one CLB task")
    health: float = Field(300, gt=0, description="targets healthy, VIP answering, apps healthy after restart")
    undo: float = Field(
        1800,
        gt=0,
        description="each wait of an undo: what it removes must first be removable (an image still being created, "
        "servers still launching, a scaling activity in progress), then be gone",
    )
    poll: float = Field(2.0, gt=0, le=60, description="longest pause between two polls")


class TierParameters(BaseModel):
    region: str = Field("ap-guangzhou", description="the region of the existing servers")
    source: ServerSelector = Field(
        title="Source servers",
        description="the tier's servers; the one imaged is chosen among them by the rule in "
        "flows/scale_out_steps/preflight.py (`choose_source`): a single id names it",
    )
    count: int = Field(2, ge=1, le=100, description="how many servers to add")
    instance_type: str | None = Field(None, description="instance type of the new servers; default: the source's")
    image: ImageOptions = Field(default_factory=ImageOptions, title="Image")
    load_balancer: LoadBalancerOptions = Field(default_factory=LoadBalancerOptions, title="Load balancer (CLB)")
    health: HealthCheck = Field(default_factory=HealthCheck, title="Health checks")
    ssh: SshSettings = Field(default_factory=SshSettings, title="SSH access")
    timeouts: Timeouts = Field(default_factory=Timeouts, title="Timeouts (seconds)")
    run_key: str | None = Field(
        None,
        pattern=r"^[a-z0-9-]{1,36}$",
        description="names this operation's resources (tags, ClientTokens); default: the flow run id. "
        "Re-running with the same key adopts what an earlier attempt made.",
    )
    dry_run: bool = Field(False, description="check everything and record the plan; change nothing")


class BusinessRuntime(BaseModel):
    """How the business servers run their app: where it reads sdk.config, how it restarts, its port."""

    runtime: Literal["node-pm2", "java-tomcat", "dotnet-iis"] = Field(
        "node-pm2", description="how the business servers run their app"
    )
    config_path: str | None = Field(None, description="override the runtime's sdk.config path")
    restart_command: str | None = Field(None, description="override the runtime's restart command")

    def runtime_profile(self) -> RuntimeProfile:
        overrides = {"config_path": self.config_path, "restart_command": self.restart_command}
        return runtime_profile(self.runtime, **{k: v for k, v in overrides.items() if v is not None})


class BusinessServersAccess(BusinessRuntime):
    """Which business servers carry `authServerUrl`, and how their app reads it and restarts."""

    business_servers: ServerSelector = Field(
        default_factory=lambda: ServerSelector(tag_key="tcscale:tier", tag_value="business"),
        title="Business servers",
        description="business servers whose sdk.config gets the new authServerUrl (RUNNING ones)",
    )


class SessionTierParameters(BusinessServersAccess, TierParameters):
    source: ServerSelector = Field(
        default_factory=lambda: ServerSelector(tag_key="tcscale:tier", tag_value="session"),
        title="Session servers",
        description="the session (auth) servers; the one imaged is chosen among them (a single id names it)",
    )

    def backend_port(self) -> int:
        return self.load_balancer.backend_port or self.health.auth_port


class BusinessTierParameters(BusinessRuntime, TierParameters):
    source: ServerSelector = Field(
        default_factory=lambda: ServerSelector(tag_key="tcscale:tier", tag_value="business"),
        title="Business servers",
        description="the business servers; the one imaged is chosen among them (a single id names it)",
    )

    def backend_port(self) -> int:
        return self.load_balancer.backend_port or self.runtime_profile().port

    load_balancer: LoadBalancerOptions = Field(
        default_factory=LoadBalancerOptions,
        title="Load balancer (CLB)",
        description="the public (OPEN) CLB of the business tier",
    )


class ClusterParameters(BaseModel):
    session: SessionTierParameters = Field(default_factory=SessionTierParameters, title="Session tier")
    business: BusinessTierParameters = Field(default_factory=BusinessTierParameters, title="Business tier")
    run_key: str | None = Field(
        None,
        pattern=r"^[a-z0-9-]{1,36}$",
        description="one key for both tiers (cleanup-run with it finds everything); default: this flow run's id",
    )
    dry_run: bool = Field(False, description="check everything and record the plan of both tiers; change nothing")


class CleanupParameters(BusinessServersAccess):
    run_key: str = Field(
        pattern=r"^[a-z0-9-]{1,36}$", description="the run whose resources to remove (its flow run id)"
    )
    region: str = "ap-guangzhou"
    tier: Tier | None = Field(
        None,
        description="undo only this tier's changes (those whose marks name it: its tagged resources, listeners, kept "
        "scaling-group and capacity changes); None: every change of the run",
    )
    restore_configs: bool = Field(True, description="put back the business servers' sdk.config from the run's backup")
    ssh: SshSettings = Field(default_factory=SshSettings, title="SSH access")
    health: HealthCheck = Field(
        default_factory=HealthCheck, title="Health checks", description="how a restarted business app is verified"
    )
    timeout: float = Field(600, gt=0, description="deadline of each wait, seconds")
    dry_run: bool = Field(False, description="list what would be removed; change nothing")


# --- Auto Scaling ------------------------------------------------------------------------------------------

CRON_FIELD = r"^[0-9*,/-]+$"


class LunchPeak(BaseModel):
    """The guide's lunch peak: more servers every day from `start` to `end`, Beijing time (Asia/Shanghai)."""

    enabled: bool = Field(True, description="schedule the peak (False: remove tcscale's peak actions)")
    extra: int = Field(2, ge=1, le=100, description="servers added for the peak")
    start: str = Field("11:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="peak start, HH:MM Beijing time")
    end: str = Field("13:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="peak end, HH:MM Beijing time")
    days_of_week: str = Field("*", pattern=CRON_FIELD, description="cron day-of-week field (1 = Monday ... 7)")
    lead_minutes: int | None = Field(
        None,
        ge=0,
        le=180,
        description="start the scale-out this early; None: the measured launch-to-healthy time "
        "of the tier's image plus `margin_minutes`",
    )
    margin_minutes: int = Field(5, ge=0, le=120, description="added to the measured launch-to-healthy time")
    end_time: str | None = Field(
        None, description="when the recurrence stops, YYYY-MM-DDThh:mm:ss+08:00; None: one year after the first peak"
    )

    @model_validator(mode="after")
    def ordered(self) -> LunchPeak:
        if self.start >= self.end:
            raise ValueError(f"the peak must start before it ends ({self.start} >= {self.end})")
        for field in self.days_of_week.split(","):
            for part in field.split("/")[0].split("-"):
                if part != "*" and not (part.isdigit() and 1 <= int(part) <= 7):
                    raise ValueError(f"days_of_week {self.days_of_week!r}: Tencent takes 1 (Monday) .. 7 or *")
        return self


class CpuAlarm(BaseModel):
    threshold: int = Field(ge=1, le=100, description="CPU %")
    minutes: int = Field(ge=1, le=50, description="the condition holds this long (1..10, or a multiple of 5 to 50)")
    adjustment: int = Field(description="servers added (+) or removed (-)")
    cooldown: int = Field(300, ge=0, le=3600, description="seconds before the group scales again")

    @model_validator(mode="after")
    def periods(self) -> CpuAlarm:
        if self.minutes > 10 and self.minutes % 5:
            raise ValueError(f"{self.minutes} min: above 10 minutes give a multiple of 5 (Period 300 s x 1..10)")
        if self.adjustment == 0:
            raise ValueError("an alarm policy's adjustment cannot be 0")
        return self

    def period_and_count(self) -> tuple[int, int]:
        """(Period, ContinuousTime) as the API takes them: 60 s x n up to 10 min, else 300 s x n."""
        return (60, self.minutes) if self.minutes <= 10 else (300, self.minutes // 5)


class CpuAlarms(BaseModel):
    enabled: bool = Field(True, description="create the CPU alarm policies (False: remove tcscale's)")
    high: CpuAlarm = Field(default_factory=lambda: CpuAlarm(threshold=70, minutes=5, adjustment=1))
    low: CpuAlarm = Field(default_factory=lambda: CpuAlarm(threshold=20, minutes=15, adjustment=-1))

    @model_validator(mode="after")
    def apart(self) -> CpuAlarms:
        if self.low.threshold >= self.high.threshold:
            raise ValueError(f"the low CPU threshold ({self.low.threshold}) must be below the high one")
        if self.high.adjustment < 0 or self.low.adjustment > 0:
            raise ValueError("the high alarm adds servers (adjustment > 0), the low one removes them (< 0)")
        return self


class CostModel(BaseModel):
    """For the report's monthly comparison of fixed peak capacity against the scheduled plan."""

    hourly_price: float | None = Field(
        None,
        ge=0,
        description="one server's price per hour (e.g. CNY), overriding the quote; None: the cloud's own quote "
        "(InquiryPriceRunInstances) for the tier's instance type and charge type",
    )
    charge_type: Literal["POSTPAID_BY_HOUR", "PREPAID"] = Field(
        "POSTPAID_BY_HOUR", description="how the tier's servers are paid (Auto Scaling launches pay-as-you-go)"
    )
    currency: str = "CNY"
    days_per_month: int = Field(30, ge=1, le=31)
    load_profile: list[int] | None = Field(
        None,
        min_length=24,
        max_length=24,
        description="servers needed in each hour 0..23 Beijing time; None: the "
        "schedule's own (base capacity, + extra in the peak)",
    )


class AutoScalingParameters(BaseModel):
    min_size: int | None = Field(None, ge=0, le=2000, description="None: the tier's servers now (never fewer)")
    max_size: int | None = Field(None, ge=0, le=2000, description="None: desired + peak extra + 2")
    desired: int | None = Field(None, ge=0, le=2000, description="None: min_size")
    instance_type: str | None = Field(None, description="None: the tier's source server's")
    image_id: str | None = Field(None, description="launch from this NORMAL image; None: image a tier server")
    subnet_ids: list[str] = Field(default_factory=list, description="None: the subnets of the tier's servers")
    termination_policy: Literal["OLDEST_INSTANCE", "NEWEST_INSTANCE"] = "NEWEST_INSTANCE"
    peak: LunchPeak = Field(default_factory=LunchPeak)
    alarms: CpuAlarms = Field(default_factory=CpuAlarms)
    cost: CostModel = Field(default_factory=CostModel)
    activity_timeout: float = Field(900, gt=0, description="deadline of one scaling activity, seconds")

    @model_validator(mode="after")
    def bounds(self) -> AutoScalingParameters:
        lo, hi, want = self.min_size, self.max_size, self.desired
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_size {lo} > max_size {hi}")
        if want is not None and ((lo is not None and want < lo) or (hi is not None and want > hi)):
            bounds = f"[{lo if lo is not None else 0}, {hi if hi is not None else '-'}]"
            raise ValueError(f"desired {want} is outside the group's bounds {bounds}")
        return self


class SessionAutoScalingParameters(SessionTierParameters):
    autoscaling: AutoScalingParameters = Field(default_factory=AutoScalingParameters, title="Auto Scaling")


class BusinessAutoScalingParameters(BusinessTierParameters):
    autoscaling: AutoScalingParameters = Field(default_factory=AutoScalingParameters, title="Auto Scaling")


AutoScalingTierParameters = SessionAutoScalingParameters | BusinessAutoScalingParameters


class AutoScalingClusterParameters(BaseModel):
    tiers: list[Tier] = Field(default_factory=lambda: ["session", "business"], min_length=1)
    session: SessionAutoScalingParameters = Field(default_factory=SessionAutoScalingParameters, title="Session tier")
    business: BusinessAutoScalingParameters = Field(
        default_factory=BusinessAutoScalingParameters, title="Business tier"
    )
    run_key: str | None = Field(None, pattern=r"^[a-z0-9-]{1,36}$")
    dry_run: bool = Field(False, description="show the difference it would apply; change nothing")


class CapacityParameters(BaseModel):
    tier: Tier
    capacity: str = Field(pattern=r"^[+-]?\d{1,4}$", description="absolute (4), or relative (+2, -1)")
    floor: bool = Field(
        False,
        description="also make an absolute capacity the group's minimum, as an Auto Scaling scheduled action does: "
        "the CPU alarms add servers above it, never remove below it (plan-capacity's Prefect schedules set it)",
    )
    session: SessionAutoScalingParameters = Field(default_factory=SessionAutoScalingParameters, title="Session tier")
    business: BusinessAutoScalingParameters = Field(
        default_factory=BusinessAutoScalingParameters, title="Business tier"
    )
    dry_run: bool = False
    late_after_minutes: int | None = Field(
        None,
        ge=1,
        le=24 * 60,
        title="Late after (minutes)",
        description="a scheduled run that starts more than this many minutes after its scheduled time changes "
        "nothing and says why (the lunch-peak schedules set 20); None: never too late",
    )

    @field_validator("capacity", mode="before")
    @classmethod
    def _number_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _floor_is_absolute(self) -> CapacityParameters:
        if self.floor and self.capacity[0] in "+-":
            raise ValueError(f"floor takes an absolute capacity (4), not {self.capacity!r}")
        return self

    def target(self, current: int) -> int:
        return current + int(self.capacity) if self.capacity[0] in "+-" else int(self.capacity)

    def tier_params(self) -> AutoScalingTierParameters:
        chosen = self.session if self.tier == "session" else self.business
        return chosen.model_copy(update={"dry_run": self.dry_run or chosen.dry_run})


class CapacityPlanParameters(BaseModel):
    """plan-capacity's run form: which tier, how much history, and the few choices of the plan."""

    tier: Tier
    history_days: int = Field(28, ge=14, le=28, description="days of the tier's metrics the forecast learns from")
    target_cpu: int | None = Field(
        None,
        ge=10,
        le=95,
        title="Target CPU (%)",
        description="plan each server to this CPU at the forecast load; None: the high CPU alarm's threshold, so "
        "the alarm fires only for load the forecast did not see",
    )
    connections_per_server: float | None = Field(
        None,
        gt=0,
        description="new connections/s one server carries at the target CPU; None: measured from the history "
        "(the servers' CPUUsage against their share of the CLB's ClientNewConn)",
    )
    margin_minutes: int = Field(5, ge=0, le=120, description="added to the measured launch-to-healthy time")
    max_steps: int = Field(8, ge=2, le=24, description="at most this many capacity steps a day")
    hourly_price: float | None = Field(
        None, ge=0, description="one server's price per hour; None: the cloud's quote for the tier's instance type"
    )
    session: SessionAutoScalingParameters = Field(default_factory=SessionAutoScalingParameters, title="Session tier")
    business: BusinessAutoScalingParameters = Field(
        default_factory=BusinessAutoScalingParameters, title="Business tier"
    )
    dry_run: bool = Field(False, description="forecast and show the plan and its cost; change nothing")

    def tier_params(self) -> AutoScalingTierParameters:
        chosen = self.session if self.tier == "session" else self.business
        return chosen.model_copy(update={"dry_run": self.dry_run or chosen.dry_run})
