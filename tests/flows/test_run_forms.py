"""The run forms (flows/run_forms.py): a few decisions and one `overrides` object, turned into the flows' full
parameters that the cluster declaration completes; what the UI, the schedules, the chat bridge and the crash
automation send is a valid form."""

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from chatops.commands import parse
from deployments.serve import PREFECT_YAML, load_flow
from flows.autoscaling_steps.capacity_schedules import capacity_schedule
from flows.declaration import ClusterDeclaration, merge
from flows.run_forms import (
    AutoScalingForm,
    BusinessScaleOutForm,
    CapacityForm,
    CleanupForm,
    ClusterScaleOutForm,
    OverridesError,
    PlanCapacityForm,
    RunForm,
    SessionScaleOutForm,
    form_parameters,
    parameter_model,
)
from tests.flows.test_declaration import DECLARED

FORMS = [
    SessionScaleOutForm,
    BusinessScaleOutForm,
    ClusterScaleOutForm,
    CleanupForm,
    AutoScalingForm,
    CapacityForm,
    PlanCapacityForm,
]


@pytest.fixture
def declaration() -> ClusterDeclaration:
    return ClusterDeclaration.model_validate(DECLARED)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_a_form_is_a_few_titled_described_fields_without_none(form: type[RunForm]) -> None:
    schema = form.model_json_schema()
    fields = schema["properties"]
    assert len(fields) <= 6 and list(fields)[-1] == "overrides", list(fields)
    for name, field in fields.items():
        assert field.get("title") and field.get("description"), name
        if field.get("type") == "integer":  # bounds said in words (the UI shows the description, not min/max)
            assert str(field["minimum"]) in field["description"] and str(field["maximum"]) in field["description"]
    text = json.dumps(schema)
    assert '"null"' not in text and "anyOf" not in text  # the UI draws None as 'Property is type "None"'
    for secretish in ("known_hosts", "key_file", "host key", "password"):
        assert secretish not in text


def test_every_deployment_takes_its_run_form() -> None:
    specs = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    taken = {spec["name"]: parameter_model(load_flow(spec["entrypoint"])) for spec in specs}
    assert taken["cluster"] is ClusterScaleOutForm and taken["lunch-peak-session"] is CapacityForm
    assert set(taken.values()) == set(FORMS)


def test_decisions_and_overrides_become_the_full_parameters_the_declaration_completes(
    declaration: ClusterDeclaration,
) -> None:
    form = ClusterScaleOutForm.model_validate(
        {"business_count": 4, "dry_run": True, "overrides": {"business": {"ssh": {"port": 2200}}}}
    )
    params = merge(form.parameters(), declaration)
    assert (params.session.count, params.business.count, params.dry_run) == (3, 4, True)  # declared, decided
    assert (params.business.ssh.port, params.business.ssh.user) == (2200, "ubuntu")  # overridden, declared
    assert params.session.ssh.port == 2222 and params.business.runtime == "java-tomcat"
    assert params.session.instance_type is None  # "" is no decision: declared, else the imaged server's
    typed = ClusterScaleOutForm(instance_type="S5.LARGE8").parameters()
    assert typed.session.instance_type == typed.business.instance_type == "S5.LARGE8"
    # the UI sends every field, the run key empty: this flow run's id, as before
    assert SessionScaleOutForm(count=2, instance_type="", dry_run=False, run_key="").parameters().run_key is None


def test_chat_commands_schedules_and_the_crash_automation_send_valid_forms(declaration: ClusterDeclaration) -> None:
    scale = parse("scale session 2").parameters(dry_run=True)["params"]
    assert merge(SessionScaleOutForm.model_validate(scale).parameters(), declaration).count == 2
    assert BusinessScaleOutForm.model_validate(parse("scale business 1").parameters(False)["params"])
    capacity = CapacityForm.model_validate(parse("set business -1").parameters(True)["params"]).parameters()
    assert (capacity.tier, capacity.capacity, capacity.dry_run, capacity.late_after_minutes) == (
        "business", "-1", True, None
    )  # fmt: skip
    for schedule in (capacity_schedule("45 10 * * *", "peak-out", "session", "+2", 20),
                     capacity_schedule("30 11 * * 1-5", "plan-weekday-1130", "session", "3", 20)):  # fmt: skip
        scheduled = CapacityForm.model_validate(schedule.parameters["params"]).parameters()
        assert scheduled.late_after_minutes == 20 and scheduled.capacity in ("+2", "3")
    assert CleanupForm.model_validate(parse("cleanup run-1").parameters(True)["params"]).parameters().run_key == "run-1"
    planned = PlanCapacityForm.model_validate(parse("capacity business").parameters(True)["params"]).parameters()
    assert (planned.tier, planned.dry_run, planned.history_days, planned.target_cpu) == ("business", True, 28, None)
    # the crash automation's (tests/deployments/test_crashes.py renders it)
    assert CleanupForm.model_validate({"run_key": "killed-1"}).parameters().restore_configs is True


def test_a_deployment_starts_from_the_declared_counts_only(declaration: ClusterDeclaration) -> None:
    assert form_parameters(declaration, SessionScaleOutForm) == {"params": {"count": 3}}
    assert form_parameters(declaration, ClusterScaleOutForm) == {"params": {"session_count": 3, "business_count": 2}}
    assert form_parameters(declaration, CapacityForm) == {"params": {}}


def test_capacity_overrides_are_the_chosen_tiers() -> None:
    form = CapacityForm(tier="business", capacity="+1", overrides={"autoscaling": {"activity_timeout": 60}})
    params = form.parameters()
    assert params.business.autoscaling.activity_timeout == 60 and "session" not in params.model_fields_set
    assert CapacityForm(tier="session", capacity="2", late_after_minutes=0).parameters().late_after_minutes is None


@pytest.mark.parametrize(
    ("form", "values", "message"),
    [
        (ClusterScaleOutForm, {"overrides": {"sesion": {"count": 1}}}, r"overrides\.sesion: no such field"),
        (SessionScaleOutForm, {"overrides": {"ssh": {"prot": 22}}}, r"overrides\.ssh\.prot: no such field"),
        (CapacityForm, {"tier": "session", "capacity": "1", "overrides": {"tier": "x"}}, r"overrides\.tier: no such"),
        (SessionScaleOutForm, {"count": 2, "overrides": {"count": 5}}, r"overrides\.count: the run form decides it"),
        (ClusterScaleOutForm, {"run_key": "k", "overrides": {"run_key": "j"}}, r"overrides\.run_key: the run form"),
    ],
)
def test_a_wrong_override_is_an_error_naming_it(form: type[RunForm], values: dict[str, Any], message: str) -> None:
    with pytest.raises(OverridesError, match=message):
        form.model_validate(values).parameters()


def test_bad_values_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="count"):
        SessionScaleOutForm(count=0)
    with pytest.raises(ValidationError, match="run_key"):
        ClusterScaleOutForm(run_key="Not A Key")
    with pytest.raises(ValidationError, match="port"):  # an override's value, validated by the full model
        SessionScaleOutForm(overrides={"ssh": {"port": 0}}).parameters()
    with pytest.raises(ValidationError, match="extra"):
        CleanupForm.model_validate({"run_key": "abc", "region": "ap-x"})  # region belongs in overrides
