"""`tcscale run FLOW`: parameters from a file and flags, validated before anything runs."""

import json

from typer.testing import CliRunner

from cli.main import app
from tests.flows.support import inventory, session_params

runner = CliRunner()


def test_run_a_dry_run_from_a_file_and_flags(guide, cloud_env, tmp_path):
    params = session_params(guide).model_dump(mode="json")
    params["ssh"]["key_file"] = guide["key_pair"]["private_key_file"]
    file = tmp_path / "session.json"
    file.write_text(json.dumps(params))
    before = inventory(cloud_env)

    result = runner.invoke(app, ["run", "scale-out-session-tier", "--params", str(file), "-p", "dry_run=true"])

    assert result.exit_code == 0, result.output
    assert "# scale-out-session-tier (plan)" in result.output and "rewrite authServerUrl" in result.output
    assert inventory(cloud_env) == before


def test_bad_parameters_are_refused_before_anything_runs(cloud_env):
    before = inventory(cloud_env)
    result = runner.invoke(app, ["run", "scale-out-session-tier", "-p", "count=500"])
    assert result.exit_code == 2
    assert "invalid parameters for scale-out-session-tier" in result.output and "count" in result.output
    assert inventory(cloud_env) == before


def test_unknown_flow(cloud_env):
    result = runner.invoke(app, ["run", "scale-in-everything"])
    assert result.exit_code != 0 and "unknown flow" in result.output
