"""The operator's cluster, declared once: every flow run takes what it did not set from here.

The declaration is a file (YAML or JSON) named by `TCSCALE_CLUSTER_FILE`, else the Prefect Variable
`tcscale-cluster` (a JSON object, stored by `tcscale setup --cluster FILE`). It holds both tiers' parameters
(region, selectors, SSH access, CLB names, runtime, counts, Auto Scaling), validated by the flows' own models,
and who schedules the lunch peak. A scheduled run or a chat command sends only what it means
(`{"tier": "session", "capacity": "+2"}`); `declared(params)` fills in the rest when the run starts:
explicit run values, over the declaration's values, over the models' defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.parameters import BusinessAutoScalingParameters, ServerSelector, SessionAutoScalingParameters

CLUSTER_FILE_ENV = "TCSCALE_CLUSTER_FILE"
CLUSTER_VARIABLE = "tcscale-cluster"
MAX_VARIABLE_CHARS = 5000  # prefect.types.MAX_VARIABLE_VALUE_LENGTH: a Variable's JSON value

# Never taken from the declaration: each run has its own key, and a dry run is asked for, not declared.
NOT_DECLARED = {"run_key", "dry_run"}
# Replaced as a whole, never merged field by field (a selector names servers one way).
WHOLE = (ServerSelector,)

M = TypeVar("M", bound=BaseModel)


class DeclarationError(ValueError):
    """A declaration that cannot be read or does not validate; the message names the source and the field."""


class ClusterDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: SessionAutoScalingParameters = Field(default_factory=SessionAutoScalingParameters)
    business: BusinessAutoScalingParameters = Field(default_factory=BusinessAutoScalingParameters)
    lunch_peak_by: Literal["prefect", "autoscaling"] = Field(
        "prefect",
        description="who scales each tier for the lunch peak: Prefect's cron schedules (set-capacity/lunch-peak-*) "
        "or Auto Scaling's scheduled actions (configure-autoscaling's peak); never both",
    )
    capacity_plan: Literal["lunch-peak", "forecast"] = Field(
        "lunch-peak",
        description="what each tier's schedules hold, in the place `lunch_peak_by` names: the guide's fixed lunch "
        "peak, or the steps plan-capacity forecasts from the tier's history (then the fixed peak is off everywhere)",
    )
    late_after_minutes: int = Field(
        20, ge=1, le=24 * 60, description="a scheduled lunch-peak run this late changes nothing (a worker was down)"
    )

    def tier(self, tier: str) -> SessionAutoScalingParameters | BusinessAutoScalingParameters:
        return self.session if tier == "session" else self.business


def parse_declaration(data: Any, source: str) -> ClusterDeclaration:
    if not isinstance(data, dict):
        raise DeclarationError(f"{source}: the cluster declaration must be a mapping, not {type(data).__name__}")
    try:
        return ClusterDeclaration.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
        )
        raise DeclarationError(f"{source}: invalid cluster declaration: {problems}") from None


def read_declaration_file(path: Path) -> ClusterDeclaration:
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML too
    except OSError as error:
        raise DeclarationError(f"{path}: cannot read the cluster declaration: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise DeclarationError(f"{path}: not YAML or JSON: {error}") from None
    return parse_declaration(data, str(path))


def load_declaration() -> ClusterDeclaration | None:
    """The declaration in effect: the file in TCSCALE_CLUSTER_FILE, else the Variable tcscale-cluster, else None."""
    file = os.environ.get(CLUSTER_FILE_ENV)
    if file:
        return read_declaration_file(Path(file).expanduser())
    from prefect.variables import Variable

    value = Variable.get(CLUSTER_VARIABLE, default=None)
    if value is None:
        return None
    if isinstance(value, str):  # stored as text rather than a JSON object
        try:
            value = json.loads(value)
        except ValueError:
            raise DeclarationError(f"Prefect Variable {CLUSTER_VARIABLE}: not a JSON object") from None
    return parse_declaration(value, f"Prefect Variable {CLUSTER_VARIABLE}")


def dump_declaration(declaration: ClusterDeclaration) -> dict[str, Any]:
    """The declaration as a JSON object, defaults left out (what `tcscale setup` stores in the Variable)."""
    return declaration.model_dump(mode="json", exclude_defaults=True)


def variable_size_problem(value: dict[str, Any]) -> str | None:
    size = len(json.dumps(value))
    if size > MAX_VARIABLE_CHARS:
        return (
            f"the cluster declaration is {size} characters as JSON, more than a Prefect Variable holds "
            f"({MAX_VARIABLE_CHARS}): give the workers the file instead (TCSCALE_CLUSTER_FILE), or shorten it "
            "(e.g. known_hosts_file instead of known_hosts lines)"
        )
    return None


def _fields(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in model.model_fields and k not in NOT_DECLARED}


def _tier_values(declaration: ClusterDeclaration, tier: str) -> dict[str, Any]:
    values = declaration.tier(tier).model_dump(exclude_unset=False)
    # the peak is Prefect's schedules, or plan-capacity's steps replace it: Auto Scaling's fixed peak stays off
    if declaration.lunch_peak_by == "prefect" or declaration.capacity_plan == "forecast":
        values["autoscaling"]["peak"]["enabled"] = False
    return values


def declared_values(declaration: ClusterDeclaration, model: type[BaseModel]) -> dict[str, Any]:
    """The declaration shaped as `model`'s values: the tiers' parameters where the model has tiers, else the tier
    the model is for, else (cleanup-run) what both tiers say about the business servers, their runtime and access."""
    session, business = _tier_values(declaration, "session"), _tier_values(declaration, "business")
    if "session" in model.model_fields and "business" in model.model_fields:
        values = {}
        for tier, tier_values in (("session", session), ("business", business)):
            annotation = model.model_fields[tier].annotation
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), annotation
            values[tier] = _fields(annotation, tier_values)
        return values
    from flows.parameters import BusinessTierParameters, SessionTierParameters

    if issubclass(model, SessionTierParameters):
        return _fields(model, session)
    if issubclass(model, BusinessTierParameters):
        return _fields(model, business)
    return _fields(model, {**session, **business})


def _overlay(explicit: BaseModel, base: dict[str, Any]) -> dict[str, Any]:
    """`base` with every field `explicit` set (recursively) put over it."""
    merged = dict(base)
    for name in explicit.model_fields_set:
        value = getattr(explicit, name)
        if isinstance(value, BaseModel) and not isinstance(value, WHOLE) and isinstance(base.get(name), dict):
            merged[name] = _overlay(value, base[name])
        else:
            merged[name] = value
    return merged


def merge(params: M, declaration: ClusterDeclaration) -> M:
    values = _overlay(params, declared_values(declaration, type(params)))
    return type(params).model_validate(values)


def declared(params: M) -> M:
    """`params` with every field the run did not set taken from the cluster declaration (none: unchanged)."""
    declaration = load_declaration()
    return params if declaration is None else merge(params, declaration)
