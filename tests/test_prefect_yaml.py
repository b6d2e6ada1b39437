"""prefect.yaml names real flows: every entrypoint imports and is a Prefect flow."""

import importlib
from pathlib import Path

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parent.parent


def test_every_entrypoint_is_a_flow():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for deployment in config["deployments"]:
        path, _, attribute = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attribute)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        names.add(flow.name)
    assert names == {
        "scale-out-cluster",
        "scale-out-session-tier",
        "scale-out-business-tier",
        "cleanup-run",
        "configure-autoscaling",
        "verify-autoscaling",
        "set-capacity",
    }
