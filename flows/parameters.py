"""Flow parameters: pydantic models that are also the Prefect UI's run form."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

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
    poll: float = Field(2.0, gt=0, le=60, description="longest pause between two polls")


class TierParameters(BaseModel):
    region: str = Field("ap-guangzhou", description="the region of the existing servers")
    source: ServerSelector = Field(
        description="the tier's servers; the one imaged is chosen among them by the rule in flows/preflight.py "
        "(`choose_source`): a single id names it"
    )
    count: int = Field(2, ge=1, le=100, description="how many servers to add")
    instance_type: str | None = Field(None, description="instance type of the new servers; default: the source's")
    image: ImageOptions = Field(default_factory=ImageOptions)
    load_balancer: LoadBalancerOptions = Field(default_factory=LoadBalancerOptions)
    health: HealthCheck = Field(default_factory=HealthCheck)
    ssh: SshSettings = Field(default_factory=SshSettings)
    timeouts: Timeouts = Field(default_factory=Timeouts)
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
        description="business servers whose sdk.config gets the new authServerUrl (RUNNING ones)",
    )


class SessionTierParameters(BusinessServersAccess, TierParameters):
    source: ServerSelector = Field(
        default_factory=lambda: ServerSelector(tag_key="tcscale:tier", tag_value="session"),
        description="the session (auth) servers; the one imaged is chosen among them (a single id names it)",
    )

    def backend_port(self) -> int:
        return self.load_balancer.backend_port or self.health.auth_port


class BusinessTierParameters(BusinessRuntime, TierParameters):
    source: ServerSelector = Field(
        default_factory=lambda: ServerSelector(tag_key="tcscale:tier", tag_value="business"),
        description="the business servers; the one imaged is chosen among them (a single id names it)",
    )

    def backend_port(self) -> int:
        return self.load_balancer.backend_port or self.runtime_profile().port

    load_balancer: LoadBalancerOptions = Field(
        default_factory=LoadBalancerOptions, description="the public (OPEN) CLB of the business tier"
    )


class ClusterParameters(BaseModel):
    session: SessionTierParameters = Field(default_factory=SessionTierParameters)
    business: BusinessTierParameters = Field(default_factory=BusinessTierParameters)
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
    restore_configs: bool = Field(True, description="put back the business servers' sdk.config from the run's backup")
    ssh: SshSettings = Field(default_factory=SshSettings)
    health: HealthCheck = Field(default_factory=HealthCheck, description="how a restarted business app is verified")
    timeout: float = Field(600, gt=0, description="deadline of each wait, seconds")
    dry_run: bool = Field(False, description="list what would be removed; change nothing")
