"""The run forms: what a person decides for one run, and nothing else.

Each deployment's flow (flows/entrypoints.py) takes one of these as `params`: the Prefect UI draws it as the Custom run
form, the lunch-peak schedules, the chat bridge and the API send it. A few decisions (how many servers, dry run,
run key, ...) and one optional `overrides` object; everything else comes from the cluster declaration
(flows/declaration.py) when the run starts. `parameters()` turns a form into the flow's full parameters (the models
of flows/parameters.py) holding only what the run set: its decisions and its overrides; the flow's `declared()`
then fills in the rest from the declaration, the one merge. An empty text decision ("" instance type, "" run key)
leaves the field to the declaration (then to the model's default).

The UI shows an optional field that may be None as a choice with 'Property is type "None"' under it: the forms have
no None, only defaults ("" or 0 saying what they mean).
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from flows.declaration import ClusterDeclaration
from flows.parameters import (
    AutoScalingClusterParameters,
    BusinessTierParameters,
    CapacityParameters,
    CapacityPlanParameters,
    CleanupParameters,
    ClusterParameters,
    SessionTierParameters,
    Tier,
)

OPTIONAL_RUN_KEY = r"^([a-z0-9-]{1,36})?$"
RUN_KEY_HELP = (
    "names this operation's resources (tags, ClientTokens), 1 to 36 of a-z 0-9 -; empty: this flow run's id. "
    "Running again with the same key adopts what an earlier attempt made."
)
DRY_RUN_HELP = "check everything and record the plan; change nothing"


class OverridesError(ValueError):
    """An `overrides` object naming a field the parameters do not have, or one the form itself decides."""


def overrides_field(example: str) -> Any:
    return Field(
        default={},
        title="Overrides (rare)",
        description="the cluster declaration's values to change for this run only, as JSON shaped like the "
        f"declaration (docs/operating.md, 'Overrides'), e.g. {example}; empty: as declared",
    )


class RunForm(BaseModel):
    """A form: its decisions and `overrides`, turned into `full`'s values by `parameters()`."""

    model_config = ConfigDict(extra="forbid")
    full: ClassVar[type[BaseModel]]
    if TYPE_CHECKING:  # each form declares it last, after its decisions (the UI draws fields in this order)
        overrides: dict[str, Any]

    def decisions(self) -> dict[str, Any]:
        """The decisions the run made, in `full`'s shape (a field left unset or empty is not a decision)."""
        raise NotImplementedError

    @classmethod
    def prefilled(cls, declaration: ClusterDeclaration) -> dict[str, Any]:
        """The form's values a deployment starts from (the UI shows them): the declaration's, where it has them."""
        return {}

    def parameters(self) -> Any:
        """The flow's full parameters: the overrides, with the decisions beside them (never over them)."""
        check_fields(self.full, self.overrides, "overrides")
        return self.full.model_validate(together(self.overrides, self.decisions(), "overrides"))


def together(overrides: dict[str, Any], decisions: dict[str, Any], where: str) -> dict[str, Any]:
    """Both, nested objects joined; a field named in both is an error (the form's own field decides it)."""
    joined = dict(overrides)
    for name, value in decisions.items():
        if name not in joined:
            joined[name] = value
        elif isinstance(value, dict) and isinstance(joined[name], dict):
            joined[name] = together(joined[name], value, f"{where}.{name}")
        else:
            raise OverridesError(f"{where}.{name}: the run form decides it (its own field): remove it from overrides")
    return joined


def check_fields(model: type[BaseModel], values: dict[str, Any], where: str) -> None:
    """Every key of `values` is a field of `model`, recursively through its nested models: a misspelt override is
    an error naming it, never silently ignored."""
    for name, value in values.items():
        if name not in model.model_fields:
            known = ", ".join(model.model_fields)
            raise OverridesError(f"{where}.{name}: no such field (the fields there: {known})")
        annotation = model.model_fields[name].annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            check_fields(annotation, value, f"{where}.{name}")


def _set(form: BaseModel, **values: Any) -> dict[str, Any]:
    """The values among these whose field the run set and did not leave empty."""
    return {k: v for k, v in values.items() if k in form.model_fields_set and v != ""}


# --- scale-out -----------------------------------------------------------------------------------------------------


class TierScaleOutForm(RunForm):
    """One tier's scale-out (scale-out-session-tier, scale-out-business-tier)."""

    tier: ClassVar[Tier]
    count: int = Field(2, ge=1, le=100, title="Servers to add", description="new servers for this tier, 1 to 100")
    instance_type: str = Field(
        "", max_length=40, title="Instance type",
        description="of the new servers, e.g. S5.MEDIUM4; empty: as declared, else the imaged server's",
    )  # fmt: skip
    dry_run: bool = Field(False, title="Dry run", description=DRY_RUN_HELP)
    run_key: str = Field("", pattern=OPTIONAL_RUN_KEY, title="Run key", description=RUN_KEY_HELP)
    overrides: dict[str, Any] = overrides_field('{"load_balancer": {"listener_port": 8080}}')

    def decisions(self) -> dict[str, Any]:
        return _set(self, count=self.count, instance_type=self.instance_type, dry_run=self.dry_run,
                    run_key=self.run_key)  # fmt: skip

    @classmethod
    def prefilled(cls, declaration: ClusterDeclaration) -> dict[str, Any]:
        return {"count": declaration.tier(cls.tier).count}


class SessionScaleOutForm(TierScaleOutForm):
    """More session (auth) servers behind an internal CLB, the business servers repointed to its VIP; the rest as
    the cluster declaration says."""

    full = SessionTierParameters
    tier = "session"


class BusinessScaleOutForm(TierScaleOutForm):
    """More business servers behind a public CLB; the rest as the cluster declaration says."""

    full = BusinessTierParameters
    tier = "business"


class ClusterScaleOutForm(RunForm):
    """Both tiers, the session tier first; the rest as the cluster declaration says."""

    full = ClusterParameters
    session_count: int = Field(
        2, ge=1, le=100, title="Session servers to add", description="new session (auth) servers, 1 to 100"
    )
    business_count: int = Field(
        2, ge=1, le=100, title="Business servers to add", description="new business servers, 1 to 100"
    )
    instance_type: str = Field(
        "", max_length=40, title="Instance type",
        description="of the new servers of both tiers, e.g. S5.MEDIUM4; empty: as declared, else each tier's "
        "imaged server's",
    )  # fmt: skip
    dry_run: bool = Field(False, title="Dry run", description="check both tiers and record their plans; change nothing")
    run_key: str = Field(
        "", pattern=OPTIONAL_RUN_KEY, title="Run key",
        description="one key for both tiers (cleanup-run with it finds everything); " + RUN_KEY_HELP,
    )  # fmt: skip
    overrides: dict[str, Any] = overrides_field('{"business": {"load_balancer": {"listener_port": 8080}}}')

    def decisions(self) -> dict[str, Any]:
        tiers: dict[str, dict[str, Any]] = {"session": {}, "business": {}}
        for tier, count in (("session", "session_count"), ("business", "business_count")):
            if count in self.model_fields_set:
                tiers[tier]["count"] = getattr(self, count)
            tiers[tier].update(_set(self, instance_type=self.instance_type))
        both = {tier: values for tier, values in tiers.items() if values}
        return {**both, **_set(self, dry_run=self.dry_run, run_key=self.run_key)}

    @classmethod
    def prefilled(cls, declaration: ClusterDeclaration) -> dict[str, Any]:
        return {"session_count": declaration.session.count, "business_count": declaration.business.count}


# --- cleanup ---------------------------------------------------------------------------------------------------------


class CleanupForm(RunForm):
    """Remove what one run made, found by its marks (its run key)."""

    full = CleanupParameters
    run_key: str = Field(
        pattern=r"^[a-z0-9-]{1,36}$", title="Run key",
        description="the run whose resources to remove: its run key (its flow run id unless it was given one)",
    )  # fmt: skip
    dry_run: bool = Field(False, title="Dry run", description="list what would be removed; change nothing")
    restore_configs: bool = Field(
        True, title="Restore sdk.config",
        description="put the business servers' sdk.config back from the run's backup, and restart their app",
    )  # fmt: skip
    tier: Literal["", "session", "business"] = Field(
        "", title="Only this tier",
        description="undo only this tier's changes (a configure-autoscaling run cancelled after its other tier "
        "finished); empty: every change of the run",
    )  # fmt: skip
    overrides: dict[str, Any] = overrides_field('{"timeout": 1200}')

    def decisions(self) -> dict[str, Any]:
        chosen = _set(self, dry_run=self.dry_run, restore_configs=self.restore_configs, tier=self.tier)
        return {"run_key": self.run_key, **chosen}


# --- Auto Scaling ----------------------------------------------------------------------------------------------------


class AutoScalingForm(RunForm):
    """The tiers to hand to Auto Scaling (configure-autoscaling) or to check (verify-autoscaling), as declared."""

    full = AutoScalingClusterParameters
    tiers: list[Tier] = Field(
        default=["session", "business"], min_length=1, title="Tiers", description="the tiers to act on, in this order"
    )
    dry_run: bool = Field(False, title="Dry run", description="show what it would do; change nothing")
    run_key: str = Field("", pattern=OPTIONAL_RUN_KEY, title="Run key", description=RUN_KEY_HELP)
    overrides: dict[str, Any] = overrides_field('{"business": {"autoscaling": {"max_size": 8}}}')

    def decisions(self) -> dict[str, Any]:
        return _set(self, tiers=self.tiers, dry_run=self.dry_run, run_key=self.run_key)


class CapacityForm(RunForm):
    """One tier's desired capacity (set-capacity, and the lunch-peak schedules)."""

    full = CapacityParameters
    tier: Tier = Field(title="Tier", description="session (auth) servers or business servers")
    capacity: str = Field(
        pattern=r"^[+-]?\d{1,4}$", title="Capacity",
        description="4 sets four servers, +2 adds two, -1 removes one; kept within the scaling group's bounds",
    )  # fmt: skip
    floor: bool = Field(
        False, title="Also the minimum",
        description="an absolute capacity becomes the group's minimum too (the CPU alarms never scale in below it), "
        "as plan-capacity's schedules set it",
    )  # fmt: skip
    dry_run: bool = Field(False, title="Dry run", description="show the change; make none")
    late_after_minutes: int = Field(
        0, ge=0, le=24 * 60, title="Late after (minutes)",
        description="a scheduled run starting more than this many minutes late changes nothing and says why "
        "(the lunch-peak schedules set 20), 0 to 1440; 0: never too late",
    )  # fmt: skip
    overrides: dict[str, Any] = overrides_field('{"autoscaling": {"activity_timeout": 1800}}')

    def decisions(self) -> dict[str, Any]:
        late = _set(self, late_after_minutes=self.late_after_minutes or None)  # 0: never too late (None)
        chosen = _set(self, floor=self.floor, dry_run=self.dry_run)
        return {"tier": self.tier, "capacity": self.capacity, **chosen, **late}

    def parameters(self) -> Any:
        """The overrides are the chosen tier's."""
        check_fields(self.full.model_fields[self.tier].annotation, self.overrides, "overrides")  # type: ignore[arg-type]
        return self.full.model_validate({**self.decisions(), self.tier: self.overrides})


class PlanCapacityForm(RunForm):
    """plan-capacity: one tier's capacity scheduled ahead of the peaks its history shows."""

    full = CapacityPlanParameters
    tier: Tier = Field(title="Tier", description="session (auth) servers or business servers")
    history_days: int = Field(
        28, ge=14, le=28, title="History (days)", description="days of Cloud Monitor history to learn from, 14 to 28"
    )
    target_cpu: int = Field(
        0, ge=0, le=95, title="Target CPU (%)",
        description="each server planned to this CPU at the forecast load, 0 to 95; 0: the high CPU alarm's threshold",
    )  # fmt: skip
    dry_run: bool = Field(False, title="Dry run", description="forecast and show the plan, its chart and its cost")
    overrides: dict[str, Any] = overrides_field('{"connections_per_server": 12, "max_steps": 6}')

    def decisions(self) -> dict[str, Any]:
        target = {"target_cpu": self.target_cpu} if self.target_cpu else {}  # 0: the high alarm's threshold
        return {"tier": self.tier, **_set(self, history_days=self.history_days, dry_run=self.dry_run), **target}


# --- deployments ------------------------------------------------------------------------------------------------------


def parameter_model(flow: Any) -> type[RunForm]:
    """The run form of a deployment's flow (its one argument, `params`)."""
    return typing.get_type_hints(flow.fn)["params"]


def form_parameters(declaration: ClusterDeclaration, form: type[RunForm]) -> dict[str, Any]:
    """A deployment's default parameters: the form's values the declaration has (the servers to add), so that the
    UI's Custom run starts from them. The rest of the declaration is read when the run starts, not copied here.
    Schedules and chat commands send their own `params`, which replaces these whole (Prefect merges the top level)."""
    return {"params": form.prefilled(declaration)}
