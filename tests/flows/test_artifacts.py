"""The record a run leaves: a markdown report, a servers table, a progress artifact, read back from Prefect.

They carry ids and console links, and no secret: neither the SSH private key nor the API SecretKey
appears in any artifact or log line of the run (a failed run's record included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId

from flows.scale_out import scale_out_session_tier
from sandbox.server import EmbeddedSandbox
from tests.flows.support import session_params

CONSOLE = "https://console.cloud.tencent.com"


def artifacts_of(key: str) -> dict[str, Any]:
    """{key: artifact} of the report, its servers table and its progress."""
    keys = [key, f"{key}-servers", f"{key}-progress"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    return {a.key: a for a in found}


def run_logs(flow_run_id: Any) -> str:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
    return "\n".join(log.message for log in logs)


def secrets_of(guide: dict[str, Any], sandbox: EmbeddedSandbox) -> list[str]:
    """The private key's body lines and the API SecretKey: none may appear anywhere in a record."""
    pem = Path(guide["key_pair"]["private_key_file"]).read_text()
    key_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return ["PRIVATE KEY", sandbox.cloud.config.secret_key, *key_lines]


def assert_no_secret(text: str, secrets: list[str]) -> None:
    leaked = [secret[:12] + "…" for secret in secrets if secret in text]
    assert not leaked, f"secrets in a record: {leaked}"


def test_a_run_leaves_report_table_and_progress_without_secrets(guide, cloud_env):
    outcome = scale_out_session_tier(session_params(guide, run_key="artifacts-1"))
    key = "scale-out-session-tier-artifacts-1"
    found = artifacts_of(key)
    assert set(found) == {key, f"{key}-servers", f"{key}-progress"}

    report = found[key]
    assert report.type == "markdown" and report.data == outcome.report
    text = str(report.data)
    for instance_id in outcome.new_instance_ids:
        assert f"[{instance_id}]({CONSOLE}/cvm/instance/detail?rid=1&id={instance_id})" in text
    assert f"[{outcome.load_balancer_id}]({CONSOLE}/clb/detail?rid=1&id={outcome.load_balancer_id})" in text
    assert f"[{outcome.image_id}](" in text and "## Configuration changes" in text
    (change,) = outcome.changes
    assert f"`{change.before}` | `{change.after}` | yes |" in text
    assert "## Verification" in text and "## Steps" in text and "| failed |" not in text

    table = found[f"{key}-servers"]
    assert table.type == "table"
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    ids = {row["instance_id"]: row for row in rows}
    assert set(ids) == {guide["session_server"]["instance_id"], *outcome.new_instance_ids}
    assert (
        all(row["bound_to_clb"] for row in rows) and ids[guide["session_server"]["instance_id"]]["role"] == "existing"
    )

    progress = found[f"{key}-progress"]
    assert progress.type == "progress" and float(progress.data) == pytest.approx(100.0)

    secrets = secrets_of(guide, cloud_env)
    for artifact in found.values():
        assert_no_secret(f"{artifact.data} {artifact.description}", secrets)
    assert_no_secret(run_logs(report.flow_run_id), secrets)


def test_a_failed_run_leaves_its_report(guide, cloud_env):
    cloud_env.admin("POST", "faults", {"service": "cvm", "action": "RunInstances", "async_failure": "sold out"})
    with pytest.raises(Exception, match="LAUNCH_FAILED"):
        scale_out_session_tier(session_params(guide, run_key="artifacts-2"))
    key = "scale-out-session-tier-artifacts-2"
    found = artifacts_of(key)
    assert key in found and f"{key}-progress" in found
    text = str(found[key].data)
    assert "(failed)" in text and "| failed |" in text and "launch 2 x" in text
    secrets = secrets_of(guide, cloud_env)
    assert_no_secret(text, secrets)
    assert_no_secret(run_logs(found[key].flow_run_id), secrets)
