"""The .NET / IIS business server of the guide, for real: a Windows server launched with a password through the SDK,
the IIS flavour installed over SFTP (started at boot), and `scale-out-session-tier` with runtime `dotnet-iis`
logging in as Administrator with a password from a Prefect Secret block, rewriting `C:\\qcloud\\sdk.config`
(CRLF, UTF-8 BOM) in place and restarting the IIS site from PowerShell.
"""

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.artifacts import Artifact
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from tencentcloud.cvm.v20170312 import cvm_client, models
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

from flows.parameters import ServerSelector, SessionTierParameters
from flows.scale_out import scale_out_session_tier
from flows.scale_out_steps.preflight import PreflightFailed
from tasks import remote
from tasks.models import SshSettings, runtime_profile
from tests.flows.support import cluster_params
from tests.sdk import poll as poll_state
from tests.sdk import sdk_client

WINDOWS_IMAGE = "img-9id7emv7"  # Windows Server 2019 数据中心版 64位中文版
PASSWORD = "Iis-Sandbox-2024!"
PASSWORD_BLOCK = "tcscale-test-windows-password"
SITE = "Default Web Site"
BOM = b"\xef\xbb\xbf"
DEADLINE = 30.0


def poll(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    return poll_state(check, what=what, timeout=deadline)


def call(cvm: Any, action: str, params: dict[str, Any]) -> Any:
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    return getattr(cvm, action)(request)


def wait_running(cvm: Any, instance_id: str) -> None:
    def running() -> bool:
        (instance,) = call(cvm, "DescribeInstances", {"InstanceIds": [instance_id]}).InstanceSet
        return instance.InstanceState == "RUNNING"

    poll(f"{instance_id} RUNNING", running)


def sdk_config(auth_url: str, server_host: str) -> bytes:
    """A Windows editor's sdk.config: UTF-8 BOM, CRLF line endings, tab indentation."""
    lines = [
        "{",
        f'\t"serverHost": "{server_host}",',
        f'\t"authServerUrl": "{auth_url}",',
        '\t"tunnelServerUrl": "https://tunnel.ws.qcloud.la",',
        '\t"tunnelSignatureKey": "sandbox-tunnel-key",',
        '\t"networkTimeout": 30000',
        "}",
        "",
    ]
    return BOM + "\r\n".join(lines).encode()


def iis_app(sandbox: Any, instance_id: str) -> dict[str, Any] | None:
    guests = sandbox.admin("GET", "guests")["servers"]
    server = next((s for s in guests if s["instance_id"] == instance_id), None)
    return server["apps"].get(SITE) if server else None


@pytest.fixture
def windows_business(guide: dict[str, Any], cloud_env: Any, tmp_path: Path) -> dict[str, Any]:
    return launch_iis_business_server(guide, cloud_env, PASSWORD, tmp_path / "administrator.txt")


def launch_iis_business_server(
    guide: dict[str, Any], cloud_env: Any, password: str, password_file: Path
) -> dict[str, Any]:
    """A Windows business server beside the seed's, running the IIS flavour from a BOM + CRLF sdk.config.

    The test's own SSH logs in with the password from `password_file` (written here); the flows, from a Secret block.
    """
    # IIS answers on port 80: the operator's group admits it (the seed's business group admits 5757 and SSH only).
    vpc = sdk_client(cloud_env, vpc_client.VpcClient, guide["region"])
    admit = vpc_models.CreateSecurityGroupPoliciesRequest()
    rule = {"Protocol": "TCP", "Port": "80", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT", "PolicyDescription": "IIS"}
    group = guide["security_groups"]["business"]
    admit.from_json_string(json.dumps({"SecurityGroupId": group, "SecurityGroupPolicySet": {"Ingress": [rule]}}))
    vpc.CreateSecurityGroupPolicies(admit)
    cvm = sdk_client(cloud_env, cvm_client.CvmClient, guide["region"])
    launch = {
        "Placement": {"Zone": guide["zone"], "ProjectId": guide["project_id"]},
        "ImageId": WINDOWS_IMAGE,
        "InstanceName": "weapp-business-windows",
        "VirtualPrivateCloud": {"VpcId": guide["vpc"]["vpc_id"], "SubnetId": guide["subnet"]["subnet_id"]},
        "SecurityGroupIds": [guide["security_groups"]["business"]],
        "LoginSettings": {"Password": password},  # Windows takes no key pair
    }
    (instance_id,) = call(cvm, "RunInstances", launch).InstanceIdSet
    wait_running(cvm, instance_id)

    def ssh_up() -> dict[str, Any] | None:
        servers = cloud_env.admin("GET", "servers")["servers"]
        found = next(s for s in servers if s["instance_id"] == instance_id)
        return found if found["ssh"] == "up" and found["known_hosts"] else None

    info = poll(f"SSH on {instance_id}", ssh_up)
    profile = runtime_profile("dotnet-iis")
    password_file.write_text(password + "\n")
    ssh = SshSettings(port=info["ssh_port"], password_file=password_file, known_hosts=info["known_hosts"])
    original = sdk_config(guide["auth_server_url"], info["private_ip"])
    unit = {"name": SITE, "kind": "weapp", "manager": "iis", "config": profile.config_path}
    # Install the IIS site the way the sandbox's boot manifest describes apps (apps/layout.py), then reboot:
    # the site starts with the OS, as the guide requires of an image's app.
    with remote.session(info["private_ip"], ssh, profile, instance_id) as conn:
        sftp = conn.sftp()
        for folder in ("/etc", "/etc/sandbox", "/etc/sandbox/units"):
            with contextlib.suppress(OSError):  # exists already
                sftp.mkdir(folder)
        with sftp.open(f"/etc/sandbox/units/{SITE}.json", "wb") as file:
            file.write(json.dumps(unit).encode())
        with sftp.open(profile.sftp_path, "wb") as file:
            file.write(original)
    call(cvm, "RebootInstances", {"InstanceIds": [instance_id]})
    wait_running(cvm, instance_id)
    poll(
        "the IIS site online after the reboot",
        lambda: (a := iis_app(cloud_env, instance_id)) and a["state"] == "online",
    )
    # the admin API's view of the server (ids, addresses, ports, known_hosts), its config, the password's file
    return {**info, "original": original, "password_file": password_file}


def session_params(guide: dict[str, Any], windows: dict[str, Any], block: str) -> SessionTierParameters:
    """The demo's session tier, repointing the IIS server. IIS answers on port 80, which the sandbox serves at
    `map["80"]` when it may not bind it (as the demo's listeners do)."""
    params = cluster_params(guide, count=1).session
    params.business_servers = ServerSelector(instance_ids=[windows["instance_id"]])
    params.runtime = "dotnet-iis"
    params.health = params.health.model_copy(update={"app_port": guide["ports"]["map"]["80"]})
    # No key: Administrator logs in with the password kept in a Prefect Secret block.
    params.ssh = SshSettings(port=windows["ssh_port"], password_secret_block=block, known_hosts=windows["known_hosts"])
    return params


def read_config(windows: dict[str, Any]) -> bytes:
    ssh = SshSettings(
        port=windows["ssh_port"], password_file=windows["password_file"], known_hosts=windows["known_hosts"]
    )
    profile = runtime_profile("dotnet-iis")
    with remote.session(windows["private_ip"], ssh, profile, windows["instance_id"]) as conn:
        return remote.read_file(conn, profile.config_path)


def test_scale_out_session_tier_repoints_an_iis_server_keeping_crlf_and_bom(guide, cloud_env, windows_business):
    Secret(value=PASSWORD).save(PASSWORD_BLOCK, overwrite=True)

    outcome = scale_out_session_tier(session_params(guide, windows_business, PASSWORD_BLOCK))

    port = guide["ports"]["map"]["80"]
    old_url, new_url = guide["auth_server_url"], f"http://{outcome.vip}{'' if port == 80 else f':{port}'}/mina_auth/"
    (change,) = outcome.changes
    assert change.applied and (change.before, change.after) == (old_url, new_url)
    assert change.path == "/C:/qcloud/sdk.config"
    # Only the value changed: BOM, CRLF, tabs and key order are byte-identical.
    original, rewritten = windows_business["original"], read_config(windows_business)
    assert rewritten == original.replace(old_url.encode(), new_url.encode())
    assert rewritten.startswith(BOM) and rewritten.count(b"\r\n") == original.count(b"\r\n") == rewritten.count(b"\n")
    # The IIS site was restarted from PowerShell and loaded the new authServerUrl.
    app = iis_app(cloud_env, windows_business["instance_id"])
    assert app["state"] == "online" and app["loaded"]["authServerUrl"] == new_url and app["restarts"] >= 1, app
    # The password is in no record of the run: neither the report nor the flow run's parameters.
    report = Artifact.get(f"scale-out-session-tier-{outcome.run_key}")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(outcome.run_key))  # the run key is the flow run's id
    assert report is not None and PASSWORD not in str(report.data)
    assert PASSWORD not in json.dumps(run.parameters, default=str)


def test_a_wrong_windows_password_fails_preflight_and_creates_nothing(guide, cloud_env, windows_business):
    block = f"{PASSWORD_BLOCK}-wrong"
    Secret(value="Not-The-Password-1").save(block, overwrite=True)
    before = cloud_env.admin("GET", "state")["services"]

    with pytest.raises(PreflightFailed) as failed:
        scale_out_session_tier(session_params(guide, windows_business, block))

    message = str(failed.value)
    assert windows_business["instance_id"] in message and "authentication failed for user 'Administrator'" in message
    assert "Not-The-Password-1" not in message
    after = cloud_env.admin("GET", "state")["services"]
    assert {k: after[k] for k in ("cvm", "clb")} == {k: before[k] for k in ("cvm", "clb")}
    assert read_config(windows_business) == windows_business["original"]


def test_ssh_without_a_key_or_a_password_says_what_to_set() -> None:
    with pytest.raises(ValueError, match="password_secret_block"):
        remote.connect("127.0.0.1", SshSettings(port=1))
