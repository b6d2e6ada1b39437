"""prefect.yaml names real flows: every entrypoint imports and is a Prefect flow."""

import importlib
from pathlib import Path

import yaml
from prefect import Flow

from flows.run_forms import RunForm, parameter_model

ROOT = Path(__file__).resolve().parents[2]


def test_every_entrypoint_is_a_flow():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for deployment in config["deployments"]:
        path, _, attribute = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attribute)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        assert issubclass(parameter_model(flow), RunForm), deployment["entrypoint"]  # the run form, not the full model
        names.add(flow.name)
    assert names == {
        "scale-out-cluster",
        "scale-out-session-tier",
        "scale-out-business-tier",
        "cleanup-run",
        "configure-autoscaling",
        "verify-autoscaling",
        "set-capacity",
        "plan-capacity",
    }


DEPLOYMENTS = {
    "scale-out-cluster/cluster",
    "scale-out-session-tier/session-tier",
    "scale-out-business-tier/business-tier",
    "cleanup-run/cleanup",
    "configure-autoscaling/autoscaling",
    "verify-autoscaling/verify",
    "set-capacity/capacity",
    "set-capacity/lunch-peak-session",
    "set-capacity/lunch-peak-business",
    "plan-capacity/plan",
}


def test_deployments_have_the_agreed_names_and_say_what_they_do():
    from deployments.serve import deployment_specs, load_flow

    specs = deployment_specs()
    assert {f"{load_flow(s['entrypoint']).name}/{s['name']}" for s in specs} == DEPLOYMENTS
    assert len({s["name"] for s in specs}) == len(specs)  # distinct names
    for spec in specs:
        assert spec["description"] and "tcscale" in spec["tags"] and spec["work_pool"]["name"] == "tcscale"
        env = spec["work_pool"]["job_variables"]["env"]
        assert "TCSCALE_SECRET_KEY" not in env  # a secret is never a job variable: Secret blocks by name
        assert env["TCSCALE_SECRET_KEY_BLOCK"] == "tcscale-secret-key"


def test_lunch_peak_schedules_are_beijing_time_with_valid_parameters():
    from flows.run_forms import CapacityForm

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    peaks = {d["name"]: d["schedules"] for d in config["deployments"] if d["name"].startswith("lunch-peak-")}
    assert set(peaks) == {"lunch-peak-session", "lunch-peak-business"}
    for name, schedules in peaks.items():
        tier = name.removeprefix("lunch-peak-")
        assert [(s["cron"], s["timezone"]) for s in schedules] == [
            ("45 10 * * *", "Asia/Shanghai"),
            ("0 13 * * *", "Asia/Shanghai"),
        ]
        out, back = (CapacityForm.model_validate(s["parameters"]["params"]).parameters() for s in schedules)
        assert (out.tier, out.capacity, out.late_after_minutes) == (tier, "+2", 20)
        assert (back.tier, back.capacity, back.late_after_minutes) == (tier, "-2", 20)
