"""`tcscale up` from a fresh clone reaches "ready", its printed chat command works, and Ctrl-C (SIGINT) stops every
process it started (no child left, no port open) with exit code 0."""

import json
import os
from pathlib import Path

import pytest

from chatops.settings import ChatopsSettings
from devstack.up_inputs import StackError, wecom_robot_env
from tests.devstack.up_support import UpProcess, api, descendants, finished, listening, processes_in


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@pytest.mark.timeout(600)
def test_up_from_a_fresh_clone_is_ready_and_stops_cleanly_on_ctrl_c(up_stack: UpProcess) -> None:
    stack = up_stack
    assert {"Prefect UI", "Prefect API", "sandbox (cloud)", "chat bridge"} <= set(stack.urls), stack.output
    assert api("GET", f"{stack.api_url}/health").status_code == 200
    assert api("GET", f"{stack.urls['sandbox (cloud)']}/_sandbox/health").status_code == 200
    cluster = json.loads((stack.workdir / "cluster.json").read_text())
    assert cluster["session"]["source"]["instance_ids"] and cluster["business"]["source"]["instance_ids"]

    # The ready-made chat command, exactly as printed (`status`: the live topology through the bridge).
    # (sent right after "ready", as a newcomer would: signed lines are valid for the bridge's 5-minute window)
    assert "session tier" in stack.tried["status"]["text"], stack.tried
    # ... and the printed plan: a deployment run, created by the bridge, that completes against the sandbox.
    answer = stack.tried["plan scale session 1"]
    assert answer.get("run_id"), answer
    finished(stack, answer["run_id"])

    tree = descendants(stack.process.pid)
    assert len(tree) >= 3, f"server, sandbox, bridge at least: {tree}"
    code = stack.stop()
    assert code == 0, stack.output
    assert stack.lines[-1] == "up: stopped", stack.output
    order = [line for line in stack.lines if line.startswith("up: stopping")]
    assert order[-1] == "up: stopping the Prefect server ...", order
    if "up: stopping bridge ..." in order:
        assert order.index("up: stopping bridge ...") < order.index("up: stopping sandbox ...")
    assert [pid for pid in tree if alive(pid)] == []
    assert [pid for pid in processes_in(stack.clone) if pid != os.getpid()] == []
    assert [url for url in stack.urls.values() if listening(url)] == []


ROBOT_AES_KEY = "a" * 43
ROBOT = {"TCSCALE_CHATOPS_WECOM_ROBOT_TOKEN": "robot-token-never-shown", "TCSCALE_CHATOPS_WECOM_ROBOT_ID": "aib-1"}


def test_up_enables_the_wecom_robot_the_shell_configures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "robot-aes-key"
    key_file.write_text(ROBOT_AES_KEY + "\n")
    env = wecom_robot_env({**ROBOT, "TCSCALE_CHATOPS_WECOM_ROBOT_AES_KEY_FILE": str(key_file), "HOME": "/x"})
    assert env["TCSCALE_CHATOPS_WECOM_ROBOT_AES_KEY"] == ROBOT_AES_KEY and "HOME" not in env
    for name, value in env.items():  # the bridge started with this env serves the robot's route
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TCSCALE_CHATOPS_SIGNING_SECRET", "generic-secret")
    settings = ChatopsSettings()
    assert settings.platforms == ["generic", "wecom-robot"] and settings.wecom_robot_id == "aib-1"
    secrets = settings.resolve_secrets()
    assert secrets.wecom_robot_token is not None and secrets.wecom_robot_aes_key is not None
    assert wecom_robot_env({"HOME": "/x"}) == {}  # no robot: the generic route only, as before


def test_up_refuses_a_half_configured_wecom_robot_naming_what_is_missing() -> None:
    with pytest.raises(StackError) as refused:
        wecom_robot_env({"TCSCALE_CHATOPS_WECOM_ROBOT_TOKEN": "robot-token-never-shown"})
    message = str(refused.value)
    assert "TCSCALE_CHATOPS_WECOM_ROBOT_AES_KEY" in message and "TCSCALE_CHATOPS_WECOM_ROBOT_ID" in message
    assert "robot-token-never-shown" not in message
