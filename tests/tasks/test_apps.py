"""tasks/apps.py against the sandbox's real servers: process identity, restarts that hold, reach from a server.

The seeded business server runs the three stacks of the guide side by side, each on its real port: the
node demo (pm2, 5757, seeded), tomcat (systemd, 8080) and the IIS site (80), the last two installed here
over SFTP. The Windows profile runs on this key-login server with the IIS unit (Windows servers take no
key pair): same paths, same PowerShell commands. This host reaches each port at `ports.map[port]`.
"""

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fabric import Connection
from tencentcloud.clb.v20180317.clb_client import ClbClient
from tencentcloud.vpc.v20170312.vpc_client import VpcClient

from tasks import remote
from tasks.apps import AppNotRestarted, AppProcess, process_identity, reach_from_server, wait_restarted
from tasks.health import HealthCheck, probe_app_up
from tasks.models import RuntimeProfile, SshSettings, runtime_profile
from tests.dataplane.test_balancers import call, wait_for, wait_task

PROFILES = ("node-pm2", "java-tomcat", "dotnet-iis")
SITE = "Default Web Site"
QUICK = HealthCheck(timeout_seconds=3, settle_seconds=1.0)


# ---- the guide's business server with the three stacks --------------------------------------------------
@pytest.fixture
def guide(sandbox: Any, client: Any, tmp_path: Any) -> dict[str, Any]:
    answer = httpx.post(f"{sandbox.url}/_sandbox/seed", json={"key_file": str(tmp_path / "guide.pem")}, timeout=60)
    assert answer.status_code == 200, answer.text
    seeded = answer.json()
    servers = sandbox.admin("GET", "servers")["servers"]
    seeded["known_hosts"] = [line for server in servers for line in server["known_hosts"]]
    ssh = ssh_settings(seeded)
    host = seeded["business_server"]["private_ip"]
    config = json.dumps({"serverHost": host, "authServerUrl": seeded["auth_server_url"], "networkTimeout": 3000})
    units = {
        "tomcat": {"name": "tomcat", "kind": "weapp", "manager": "systemd", "config": "/etc/qcloud/sdk.config"},
        SITE: {"name": SITE, "kind": "weapp", "manager": "iis", "config": "C:\\qcloud\\sdk.config"},
    }
    with remote.session(host, ssh, runtime_profile("node-pm2")) as conn:
        sftp = conn.sftp()
        sftp.mkdir("/C:")
        sftp.mkdir("/C:/qcloud")
        for name, unit in units.items():
            with sftp.open(f"/etc/sandbox/units/{name}.json", "w") as file:
                file.write(json.dumps(unit))
        with sftp.open("/C:/qcloud/sdk.config", "w") as file:
            file.write(config)
        remote.run(conn, "systemctl daemon-reload && systemctl start tomcat")
        remote.restart(conn, runtime_profile("dotnet-iis", user="root"))
    for port in (8080, 80):  # the seed's business group admits only the node demo's 5757
        admit(client, seeded["security_groups"]["business"], port, "0.0.0.0/0")
    return seeded


def ssh_settings(seeded: dict[str, Any]) -> SshSettings:
    return SshSettings(
        port=seeded["ports"]["ssh"],
        key_file=seeded["key_pair"]["private_key_file"],
        known_hosts=seeded["known_hosts"],
        connect_timeout=5,
    )


def admit(client: Any, group_id: str, port: int, cidr: str) -> None:
    rule = {"Protocol": "TCP", "Port": str(port), "CidrBlock": cidr, "Action": "ACCEPT"}
    call(
        client(VpcClient),
        "CreateSecurityGroupPolicies",
        {"SecurityGroupId": group_id, "SecurityGroupPolicySet": {"Ingress": [rule]}},
    )


def profile_of(name: str) -> RuntimeProfile:
    return runtime_profile(name, user="root")  # the IIS stack on a key-login server


def served_port(guide: dict[str, Any], profile: RuntimeProfile) -> int:
    """Where this host reaches the profile's real port (ports.py)."""
    return int(guide["ports"]["map"][str(profile.port)])


@pytest.fixture
def business(guide: dict[str, Any]) -> Iterator[Connection]:
    host = guide["business_server"]["private_ip"]
    with remote.session(host, ssh_settings(guide), profile_of("node-pm2")) as conn:
        yield conn


# ---- process identity -----------------------------------------------------------------------------------
def test_process_identity_of_each_runtime(guide: dict[str, Any], business: Connection) -> None:
    host = guide["business_server"]["private_ip"]
    node = process_identity(business, profile_of("node-pm2"))
    assert node.running and node.state == "online" and node.identity.startswith("pid ")
    assert node.started_at is not None and node.restarts == 0
    java = process_identity(business, profile_of("java-tomcat"))
    assert java.running and java.state == "active" and java.started_at is not None

    iis = profile_of("dotnet-iis")
    assert process_identity(business, iis) == AppProcess(
        running=False, identity="", state="no worker", detail="no w3wp process runs"
    )  # recycled: IIS starts w3wp at the next request
    assert probe_app_up(host, served_port(guide, iis), QUICK).ok
    worker = process_identity(business, iis)
    assert worker.running and worker.identity.startswith("pid ") and worker.started_at is not None


# ---- restarts -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PROFILES)
def test_wait_restarted_sees_a_new_process_that_holds(guide: dict[str, Any], business: Connection, name: str) -> None:
    profile = profile_of(name)
    host, port = guide["business_server"]["private_ip"], served_port(guide, profile)
    assert probe_app_up(host, port, QUICK).ok  # (IIS: a worker process runs)
    before = process_identity(business, profile)
    assert before.running
    remote.restart(business, profile)
    after = wait_restarted(business, profile, before, host, port, QUICK, timeout=20)
    assert after.running and after.identity != before.identity


def test_a_crash_loop_fails_wait_restarted_naming_the_host_and_state(
    guide: dict[str, Any], business: Connection
) -> None:
    profile = profile_of("node-pm2")
    host, port = guide["business_server"]["private_ip"], served_port(guide, profile)
    before = process_identity(business, profile)
    sftp = business.sftp()
    with sftp.open(profile.sftp_path, "w") as file:
        file.write('{"authServerUrl": ')  # node's JSON.parse fails: exit 1, pm2 restarts it again and again
    remote.restart(business, profile)  # pm2 exits 0: it did launch the app
    with pytest.raises(AppNotRestarted) as failure:
        wait_restarted(business, profile, before, host, port, QUICK, timeout=20)
    assert failure.value.host == host
    assert "weapp" in str(failure.value) and "errored" in str(failure.value), str(failure.value)


def test_wait_restarted_times_out_clearly_when_nothing_restarted(guide: dict[str, Any], business: Connection) -> None:
    profile = profile_of("java-tomcat")
    host, port = guide["business_server"]["private_ip"], served_port(guide, profile)
    before = process_identity(business, profile)
    with pytest.raises(AppNotRestarted, match=re.escape("tomcat did not come back within 1.5s: HTTP: up")):
        wait_restarted(business, profile, before, host, port, QUICK, timeout=1.5)


# ---- a URL, from the server itself ----------------------------------------------------------------------
def session_vip(guide: dict[str, Any], client: Any) -> str:
    """An internal CLB with a TCP listener on 80 -> the session server's 80 (the guide's session tier)."""
    clb = client(ClbClient)
    created = call(
        clb,
        "CreateLoadBalancer",
        {
            "LoadBalancerType": "INTERNAL",
            "VpcId": guide["vpc"]["vpc_id"],
            "SubnetId": guide["subnet"]["subnet_id"],
            "ProjectId": guide["project_id"],
            "LoadBalancerName": "session-clb",
        },
    )
    lb_id = created["LoadBalancerIds"][0]

    def described() -> Any:
        found = call(clb, "DescribeLoadBalancers", {"LoadBalancerIds": [lb_id]})["LoadBalancerSet"][0]
        return found if found["Status"] == 1 else None

    vip = wait_for(described, "the CLB")["LoadBalancerVips"][0]
    listener = call(clb, "CreateListener", {"LoadBalancerId": lb_id, "Ports": [80], "Protocol": "TCP"})
    wait_task(clb, listener["RequestId"])
    targets = [{"InstanceId": guide["session_server"]["instance_id"], "Port": 80, "Weight": 10}]
    params = {"LoadBalancerId": lb_id, "ListenerId": listener["ListenerIds"][0], "Targets": targets}
    wait_task(clb, call(clb, "RegisterTargets", params)["RequestId"])
    return vip


def test_reach_from_server_through_a_vip_needs_the_security_group(
    guide: dict[str, Any], business: Connection, client: Any
) -> None:
    vip = session_vip(guide, client)
    url = f"http://{vip}/mina_auth/"
    for name in ("node-pm2", "dotnet-iis"):  # curl, then Invoke-WebRequest
        refused = reach_from_server(business, profile_of(name), url, timeout=3)
        assert not refused.ok and refused.target == f"{business.host} -> {url}"
        tool = "Invoke-WebRequest" if name == "dotnet-iis" else "curl"
        assert refused.detail.startswith(f"from {business.host}: {tool} exited "), refused.detail

    admit(client, guide["security_groups"]["session"], 80, vip)  # the guide's step: let the VIP in
    for name in ("node-pm2", "dotnet-iis"):
        reached = reach_from_server(business, profile_of(name), url, timeout=3)
        assert reached.ok, reached.detail
        assert reached.body is not None and reached.body["returnCode"] == 60012  # the made-up session
        assert "returnCode 60012" in reached.detail
