"""The guests (session service, business app and its flavours): real SSH, real HTTP, real SDK, no mocks."""

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.cvm.v20170312 import models as cvm_models

from sandbox.core.cloud import Cloud, SandboxConfig
from sandbox.cvm.instances import LaunchSpec
from sandbox.dataplane.apps.layout import guest_path, install_weapp, sdk_config
from sandbox.dataplane.apps.mina_auth import auth_probe, check_request, login_request
from sandbox.dataplane.guests import Guests
from sandbox.dataplane.net import http_probe
from tests.dataplane.test_seed import from_address, poll, run, seed, ssh

APP_DIR = "/data/release/node-weapp-demo"
RESTART = f"cd {APP_DIR} && pm2 start process.json"


@pytest.fixture
def seeded(sandbox: Any, tmp_path: Path) -> dict[str, Any]:
    return seed(sandbox, tmp_path)


def cvm_call(client: Any, action: str, params: dict[str, Any]) -> Any:
    request = getattr(cvm_models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    return getattr(client(cvm_client.CvmClient), action)(request)


def write_remote(sandbox: Any, seeded: dict[str, Any], tier: str, path: str, text: str) -> None:
    with ssh(sandbox, seeded, tier) as client, client.open_sftp() as sftp, sftp.open(path, "w") as remote:
        remote.write(text)


def health(seeded: dict[str, Any]) -> httpx.Response:
    return httpx.get(seeded["business_server"]["health_url"], timeout=10)


def unused_address(seeded: dict[str, Any]) -> str:
    """An address of the seeded subnet no server has (like a CLB VIP's)."""
    return seeded["subnet"]["cidr_block"].rsplit(".", 1)[0] + ".250"


def sdk_config_text(url: str) -> str:
    return json.dumps(sdk_config(url, server_host="127.100.0.9"), indent=4)


# ---- both servers up, and what they answer ----------------------------------------------------
def test_health_of_both_servers(seeded: dict[str, Any]) -> None:
    business, session = seeded["business_server"], seeded["session_server"]
    answer = health(seeded)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "up" and body["app"] == "node-weapp-demo"
    assert body["authServerUrl"] == seeded["auth_server_url"]
    assert body["auth"] == {"reachable": True, "returnCode": 60011}
    with from_address(business["private_ip"]) as http:  # the session server admits the business server only
        session_health = http.get(session["health_url"])
    assert session_health.status_code == 200
    assert session_health.json()["status"] == "up" and session_health.json()["app"] == "mina_auth"


def test_session_server_refuses_port_80_from_addresses_its_group_does_not_admit(seeded: dict[str, Any]) -> None:
    session = seeded["session_server"]
    for stranger in ("127.0.0.1", unused_address(seeded)):  # the test host, an address like a CLB VIP's
        with from_address(stranger) as http, pytest.raises(httpx.TransportError):
            http.post(session["auth_url"], json=auth_probe())
    with from_address(seeded["business_server"]["private_ip"]) as http:
        assert http.post(session["auth_url"], json=auth_probe()).json()["returnCode"] == 60011


def test_the_ma_protocol(seeded: dict[str, Any]) -> None:
    url = seeded["auth_server_url"]
    with from_address(seeded["business_server"]["private_ip"]) as http:
        login = http.post(url, json=login_request("wx-code-1")).json()
        assert login["returnCode"] == 0 and login["returnMessage"] == "OK"
        session = login["returnData"]
        assert set(session) == {"id", "skey", "user_info"} and session["user_info"]["openId"]
        check = http.post(url, json=check_request(session["id"], session["skey"])).json()
        assert check["returnCode"] == 0 and check["returnData"]["user_info"] == session["user_info"]
        assert http.post(url, json=check_request(session["id"], "0" * 40)).json()["returnCode"] == 60011
        assert http.post(url, json=login_request("")).json()["returnCode"] == 60012
        for malformed in (b"not json", b"[]", json.dumps({"version": 1, "componentName": "MA"}).encode()):
            answer = http.post(url, content=malformed, headers={"Content-Type": "application/json"})
            assert answer.status_code == 200 and answer.json()["returnCode"] not in (0, None)


def test_login_through_the_business_server_reaches_the_session_server(sandbox: Any, seeded: dict[str, Any]) -> None:
    business = seeded["business_server"]
    login = httpx.post(business["login_url"], headers={"X-WX-Code": "code-42", "X-WX-IV": "iv"}, timeout=10)
    assert login.status_code == 200, login.text
    session = login.json()["session"]
    base = business["login_url"].rsplit("/", 1)[0]
    user = httpx.get(f"{base}/user", headers={"X-WX-Id": session["id"], "X-WX-Skey": session["skey"]}, timeout=10)
    assert user.status_code == 200 and user.json()["data"]["userInfo"] == login.json()["userInfo"]
    guests = {s["instance_id"]: s for s in sandbox.admin("GET", "guests")["servers"]}
    assert guests[seeded["session_server"]["instance_id"]]["apps"]["mina_auth"]["loaded"]["logins"] == 1

    refused = httpx.post(business["login_url"], headers={"X-WX-Code": ""}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"] == "ERR_LOGIN_FAILED"
    sandbox.admin("POST", "clock", {"advance": 7201})  # sessions last 7200 s
    expired = httpx.get(f"{base}/user", headers={"X-WX-Id": session["id"], "X-WX-Skey": session["skey"]}, timeout=10)
    assert expired.status_code == 401 and expired.json()["error"] == "ERR_INVALID_SESSION"


# ---- restarts over SSH -----------------------------------------------------------------------
def test_pm2_start_picks_up_a_rewritten_sdk_config(sandbox: Any, seeded: dict[str, Any]) -> None:
    session, business = seeded["session_server"], seeded["business_server"]
    new_url = f"http://{session['public_ip']}/mina_auth/" if seeded["ports"]["app"] == 80 else None
    new_url = new_url or f"http://{session['public_ip']}:{seeded['ports']['app']}/mina_auth/"
    write_remote(sandbox, seeded, "business", business["sdk_config"], sdk_config_text(new_url))
    assert health(seeded).json()["authServerUrl"] == seeded["auth_server_url"]  # loaded at the last start only

    with ssh(sandbox, seeded, "business") as client:
        code, output = run(client, RESTART)
        assert code == 0, output
        assert "node-weapp-demo" in output and "online" in output
        body = health(seeded).json()
        assert body["authServerUrl"] == new_url and body["auth"]["reachable"] is True

        dead = f"http://{unused_address(seeded)}/mina_auth/"  # nobody there
        code, output = run(client, f"echo '{sdk_config_text(dead)}' > {business['sdk_config']} && {RESTART}")
        assert code == 0, output
    body = health(seeded).json()
    assert body["authServerUrl"] == dead
    assert body["status"] == "degraded" and body["auth"]["reachable"] is False and body["auth"]["error"]


def test_a_malformed_config_fails_the_restart_and_health_says_so(sandbox: Any, seeded: dict[str, Any]) -> None:
    write_remote(sandbox, seeded, "business", seeded["business_server"]["sdk_config"], '{"authServerUrl": ')
    with ssh(sandbox, seeded, "business") as client:
        code, output = run(client, RESTART)
        assert code != 0
        assert "/etc/qcloud/sdk.config" in output and "not valid JSON" in output
        code, listing = run(client, "pm2 list")
        assert code == 0 and "errored" in listing
    answer = health(seeded)
    assert answer.status_code == 503
    assert answer.json()["status"] == "down" and "not valid JSON" in answer.json()["reason"]
    login = httpx.post(seeded["business_server"]["login_url"], headers={"X-WX-Code": "c"}, timeout=10)
    assert login.status_code == 502


def test_an_injected_fault_fails_one_restart(sandbox: Any, seeded: dict[str, Any]) -> None:
    rule = {"service": "guest", "action": "node-weapp-demo.restart", "error_message": "out of memory", "count": 1}
    sandbox.admin("POST", "faults", rule)
    with ssh(sandbox, seeded, "business") as client:
        code, output = run(client, RESTART)
        assert code != 0 and "out of memory" in output
        assert health(seeded).json()["reason"] == "injected fault: out of memory"
        code, output = run(client, RESTART)
        assert code == 0, output
    assert health(seeded).json()["status"] == "up"


def test_a_malformed_config_at_boot_keeps_the_app_down_until_fixed(
    sandbox: Any, client: Any, seeded: dict[str, Any]
) -> None:
    business = seeded["business_server"]
    instance_id = business["instance_id"]
    write_remote(sandbox, seeded, "business", business["sdk_config"], "not json at all")

    def rebooted_with(status: int) -> Any:
        cvm_call(client, "RebootInstances", {"InstanceIds": [instance_id]})

        def done() -> Any:
            try:
                answer = health(seeded)
            except httpx.TransportError:
                return None  # the server is still rebooting
            return answer if answer.status_code == status else None

        return poll(f"{instance_id} rebooted, health {status}", done)

    down = rebooted_with(503).json()
    assert down["state"] == "errored" and "not valid JSON" in down["reason"]
    status = {s["instance_id"]: s for s in sandbox.admin("GET", "guests")["servers"]}[instance_id]
    assert status["apps"]["node-weapp-demo"]["state"] == "errored"

    write_remote(sandbox, seeded, "business", business["sdk_config"], sdk_config_text(seeded["auth_server_url"]))
    assert rebooted_with(200).json()["status"] == "up"  # auto-start: nobody ran pm2


def test_java_flavour_restarts_with_systemctl(sandbox: Any, seeded: dict[str, Any]) -> None:
    unit = {"name": "tomcat", "kind": "weapp", "manager": "systemd", "config": "/etc/qcloud/sdk.config"}
    write_remote(sandbox, seeded, "business", "/etc/sandbox/units/tomcat.json", json.dumps(unit))
    with ssh(sandbox, seeded, "business") as client:
        code, output = run(client, "pm2 stop node-weapp-demo && systemctl daemon-reload && systemctl restart tomcat")
        assert code == 0, output
        assert health(seeded).json()["app"] == "tomcat"
        code, output = run(client, "systemctl status tomcat")
        assert code == 0 and "active (running)" in output

        code, output = run(client, "echo '{broken' > /etc/qcloud/sdk.config && systemctl restart tomcat")
        assert code != 0 and "Job for tomcat.service failed" in output and "not valid JSON" in output
        code, output = run(client, "systemctl is-active tomcat")
        assert code == 3 and output.strip() == "failed"
        assert run(client, "systemctl restart nosuchunit")[0] != 0
    assert health(seeded).status_code == 503


def test_servers_from_an_image_of_the_session_server_start_their_auth_service(
    sandbox: Any, client: Any, seeded: dict[str, Any]
) -> None:
    session, business = seeded["session_server"], seeded["business_server"]
    image_id = cvm_call(client, "CreateImage", {"InstanceId": session["instance_id"], "ImageName": "session"}).ImageId

    def image_ready() -> bool:
        images = cvm_call(client, "DescribeImages", {"ImageIds": [image_id]}).ImageSet
        return bool(images) and images[0].ImageState == "NORMAL"

    poll("the session image", image_ready)
    launch = {
        "Placement": {"Zone": seeded["zone"], "ProjectId": seeded["project_id"]},
        "ImageId": image_id,
        "InstanceCount": 2,
        "VirtualPrivateCloud": {"VpcId": seeded["vpc"]["vpc_id"], "SubnetId": seeded["subnet"]["subnet_id"]},
        "SecurityGroupIds": [seeded["security_groups"]["session"]],
        "LoginSettings": {"KeyIds": [seeded["key_pair"]["key_id"]]},
    }
    clones = cvm_call(client, "RunInstances", launch).InstanceIdSet
    described = cvm_call(client, "DescribeInstances", {"InstanceIds": clones}).InstanceSet
    addresses = [i.PrivateIpAddresses[0] for i in described]
    port = seeded["ports"]["app"]
    with from_address(business["private_ip"]) as http:
        session_id = http.post(seeded["auth_server_url"], json=login_request("code-7")).json()["returnData"]
        for address in addresses:
            url = f"http://{address}{'' if port == 80 else f':{port}'}/mina_auth/"

            def answers(url: str = url) -> Any:
                try:
                    return http.post(url, json=auth_probe()).json()
                except httpx.TransportError:
                    return None

            assert poll(f"the auth service on {address}", answers)["returnCode"] == 60011
            # The clone shares the image's session secret: a session opened on the original is known here.
            known = http.post(url, json=check_request(session_id["id"], session_id["skey"])).json()
            assert known["returnCode"] == 0


# ---- the supervisor itself, without the SSH layer (Windows servers take no key pairs) ----------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_windows_flavour_restarts_its_iis_site_from_powershell(tmp_path: Path) -> None:
    cloud = Cloud(SandboxConfig(dataplane=False))
    region = "ap-guangzhou"
    spec = LaunchSpec(zone="ap-guangzhou-4", image_id="img-9id7emv7")
    instance_id = cloud.cvm.run_instances(region, spec, 1, "request-1")[0]
    cloud.advance(force=True)
    instance = cloud.cvm.instance(region, instance_id)
    disk = tmp_path / "disk"
    install_weapp(disk, "windows", sdk_config("http://127.0.0.1:1/mina_auth/", "127.100.0.9"))
    assert (disk / "C:" / "qcloud" / "sdk.config").is_file()  # C:\qcloud\sdk.config, SFTP /C:/qcloud/sdk.config
    port = free_port()
    health_url = f"http://{instance.private_ip}:{port}/health"

    async def scenario() -> None:
        guests = Guests(cloud, port)
        try:
            await guests.boot(instance, disk)
            up = await http_probe(None, health_url)
            assert up.status == 200 and up.json()["app"] == "Default Web Site"
            restart = ["powershell.exe", "-NoProfile", "-Command", "Restart-WebItem 'IIS:\\Sites\\Default Web Site'"]
            assert await guests.control(instance_id, restart, "C:\\") == (0, "")
            assert guests.status(instance_id)["apps"]["Default Web Site"]["restarts"] == 1

            guest_path(disk, "C:\\qcloud\\sdk.config").write_text("{")
            code, output = await guests.control(instance_id, ["iisreset"], "C:\\")
            assert code == 1 and "failed to start" in output and "not valid JSON" in output
            down = await http_probe(None, health_url)
            assert down.status == 503 and down.json()["status"] == "down"
            code, output = await guests.control(
                instance_id, ["powershell", "Get-WebItemState 'IIS:\\Sites\\Default Web Site'"], "C:\\"
            )
            assert (code, output.strip()) == (0, "Stopped")
            code, output = await guests.control(
                instance_id, ["powershell", "Restart-WebItem 'IIS:\\Sites\\Nope'"], "C:\\"
            )
            assert code == 1 and "does not exist" in output
        finally:
            await guests.stop()
        with pytest.raises(OSError):
            await http_probe(None, health_url, timeout=2)  # halted: nothing listens any more

    asyncio.run(scenario())
