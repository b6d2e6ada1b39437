"""The guide's starting point (`POST /_sandbox/seed`, `tcscale sandbox seed`): real SDK, real SSH, real HTTP."""

import json
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.cvm.v20170312 import models as cvm_models
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client
from typer.testing import CliRunner

from sandbox.cli import app as sandbox_cli
from tests.sdk import poll as poll_state
from tests.sdk import strict_ssh_client

DEADLINE = 20.0


# ---- helpers shared with test_guests.py --------------------------------------------------------
def poll(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    return poll_state(check, what=what, timeout=deadline)


def seed(sandbox: Any, tmp_path: Path) -> dict[str, Any]:
    response = httpx.post(f"{sandbox.url}/_sandbox/seed", json={"key_file": str(tmp_path / "guide.pem")}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def ssh(sandbox: Any, seeded: dict[str, Any], tier: str) -> paramiko.SSHClient:
    """Root on a seeded server, verifying its host key strictly against the admin API's known_hosts."""
    target = seeded[f"{tier}_server"]
    servers = sandbox.admin("GET", "servers")["servers"]
    info = next(s for s in servers if s["instance_id"] == target["instance_id"])
    client = strict_ssh_client(info["known_hosts"])
    port = seeded["ports"]["ssh"]
    sock = socket.create_connection((target["private_ip"], port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paramiko never sets it
    key = paramiko.RSAKey.from_private_key_file(seeded["key_pair"]["private_key_file"])
    client.connect(
        target["private_ip"], port, "root", pkey=key, sock=sock, look_for_keys=False, allow_agent=False, timeout=10
    )
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, stderr = client.exec_command(command, timeout=30)
    output = stdout.read().decode() + stderr.read().decode()
    return stdout.channel.recv_exit_status(), output


def from_address(source_ip: str) -> httpx.Client:
    """An HTTP client whose connections leave from `source_ip` (a server's address: its groups' view)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source_ip), timeout=10)


# ---- tests ------------------------------------------------------------------------------------
def test_seed_builds_the_guides_single_server_architecture(sandbox: Any, client: Any, tmp_path: Path) -> None:
    seeded = seed(sandbox, tmp_path)
    session, business = seeded["session_server"], seeded["business_server"]
    assert seeded["created"] is True
    assert (seeded["region"], seeded["zone"], seeded["project_id"]) == ("ap-guangzhou", "ap-guangzhou-3", 1001)
    assert seeded["vpc"]["cidr_block"].startswith("127.")
    assert session["private_ip"].startswith("127.") and business["private_ip"].startswith("127.")
    # Real ports in the cloud model and in authServerUrl; `ports.map` / `url` say where this host reaches them.
    assert (seeded["ports"]["session"], seeded["ports"]["business"]) == (80, 5757)
    assert (session["app_port"], business["app_port"]) == (80, 5757)
    assert seeded["auth_server_url"] == session["auth_url"] == f"http://{session['private_ip']}/mina_auth/"
    assert session["url"] == f"http://{session['private_ip']}:{seeded['ports']['map']['80']}"

    key_file = Path(seeded["key_pair"]["private_key_file"])
    assert key_file == tmp_path / "guide.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key_file.read_text()
    assert "PRIVATE KEY" not in json.dumps(seeded)

    cvm = client(cvm_client.CvmClient)
    request = cvm_models.DescribeInstancesRequest()
    request.from_json_string(json.dumps({"Filters": [{"Name": "tag-key", "Values": ["tcscale:tier"]}]}))
    found = {i.InstanceId: i for i in cvm.DescribeInstances(request).InstanceSet}
    assert set(found) == {session["instance_id"], business["instance_id"]}
    tiers = {i.InstanceId: {t.Key: t.Value for t in i.Tags}["tcscale:tier"] for i in found.values()}
    assert tiers == {session["instance_id"]: "session", business["instance_id"]: "business"}
    assert all(i.InstanceState == "RUNNING" for i in found.values())
    assert found[business["instance_id"]].LoginSettings.KeyIds == [seeded["key_pair"]["key_id"]]

    vpc = client(vpc_client.VpcClient)

    def ingress(group_id: str) -> list[Any]:
        request = vpc_models.DescribeSecurityGroupPoliciesRequest()
        request.SecurityGroupId = group_id
        return vpc.DescribeSecurityGroupPolicies(request).SecurityGroupPolicySet.Ingress

    session_rules = {(r.Port, r.CidrBlock or r.SecurityGroupId) for r in ingress(seeded["security_groups"]["session"])}
    ssh_port = str(seeded["ports"]["ssh"])
    assert session_rules == {("80", seeded["security_groups"]["business"]), (ssh_port, "0.0.0.0/0")}
    business_rules = {(r.Port, r.CidrBlock) for r in ingress(seeded["security_groups"]["business"])}
    assert business_rules == {("5757", "0.0.0.0/0"), (ssh_port, "0.0.0.0/0")}


def test_ssh_into_the_business_server_and_read_sdk_config(sandbox: Any, tmp_path: Path) -> None:
    seeded = seed(sandbox, tmp_path)
    with ssh(sandbox, seeded, "business") as client:
        code, output = run(client, f"cat {seeded['business_server']['sdk_config']}")
        assert code == 0, output
        config = json.loads(output)
        assert config["authServerUrl"] == seeded["auth_server_url"]
        assert set(config) >= {"serverHost", "authServerUrl", "tunnelServerUrl", "tunnelSignatureKey", "networkTimeout"}
        code, output = run(client, f"cd {seeded['business_server']['app_dir']} && cat process.json")
        assert code == 0 and json.loads(output)["name"] == "weapp"


def test_a_second_seed_answers_the_same_servers(sandbox: Any, tmp_path: Path) -> None:
    first = seed(sandbox, tmp_path)
    again = httpx.post(f"{sandbox.url}/_sandbox/seed", json={}, timeout=60)
    assert again.status_code == 200, again.text
    second = again.json()
    assert second["created"] is False
    for tier in ("session_server", "business_server"):
        assert second[tier]["instance_id"] == first[tier]["instance_id"]
    assert second["key_pair"] == first["key_pair"]


def test_seed_refuses_a_bad_request_clearly(sandbox: Any, tmp_path: Path) -> None:
    response = httpx.post(f"{sandbox.url}/_sandbox/seed", json={"vpc_cidr": "10.0.0.0/16"}, timeout=60)
    assert response.status_code == 400
    assert "127.0.0.0/8" in response.json()["error"]


def test_cli_seed_prints_the_description(sandbox: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "cli.pem"
    result = CliRunner().invoke(sandbox_cli, ["seed", "--endpoint", sandbox.url, "--key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["key_pair"]["private_key_file"] == str(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    home = httpx.get(described["business_server"]["url"] + "/", timeout=10)
    assert home.status_code == 200 and "腾讯云微信小程序服务器 Demo - Node.js" in home.text


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:1"])
def test_cli_seed_says_when_the_sandbox_is_unreachable(endpoint: str) -> None:
    result = CliRunner().invoke(sandbox_cli, ["seed", "--endpoint", endpoint])
    assert result.exit_code == 1
    assert "cannot reach" in result.output


# Another sandbox process: claims the highest free /16 of the seed's range (127.64-99), says which, holds it until told.
HOLD_A_NETWORK = (
    "from sandbox.core.pools import claim\nclass Sandbox: ...\nowner = Sandbox()\n"
    "print(next(n for n in (f'127.{s}.0.0/16' for s in range(99, 63, -1)) if claim(n, owner)), flush=True)\ninput()"
)


def test_a_named_vpc_is_held_like_a_default_one(sandbox: Any, tmp_path: Path) -> None:
    """A VPC named in the seed is claimed as a default one is: one held by another sandbox on this host is refused,
    naming it (both seeds' servers would get the same addresses and their apps fight for the unmapped port 5757)."""
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_NETWORK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        held = other.stdout.readline().strip() if other.stdout else ""
        response = httpx.post(f"{sandbox.url}/_sandbox/seed", json={"vpc_cidr": held}, timeout=60)
    finally:
        other.communicate("\n", timeout=10)
    assert response.status_code == 409, response.text
    assert held in response.json()["error"] and "another sandbox" in response.json()["error"]
