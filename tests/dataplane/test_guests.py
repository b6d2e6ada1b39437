"""The guests answer like the real Wafer apps (and nothing more): real SSH, real HTTP, real SDK, no mocks."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.cvm.v20170312 import models as cvm_models
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

from sandbox.dataplane.apps.layout import sdk_config
from sandbox.dataplane.apps.mina_auth import check_request, login_request
from tests.dataplane.test_seed import from_address, poll, run, seed, ssh

APP_DIR = "/data/release/node-weapp-demo"
RESTART = f"cd {APP_DIR} && pm2 start process.json"
MAGIC = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"
BOGUS = {"X-WX-Id": "made0up0id", "X-WX-Skey": "made0up0skey"}
MA_AUTH = {
    "version": 1,
    "componentName": "MA",
    "interface": {"interfaceName": "qcloud.cam.auth", "para": {"id": "a1", "skey": "b2"}},
}


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


def business_get(seeded: dict[str, Any], path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(seeded["business_server"]["url"] + path, timeout=10, **kwargs)


def unused_address(seeded: dict[str, Any]) -> str:
    """An address of the seeded subnet no server has (like a CLB VIP's)."""
    return seeded["subnet"]["cidr_block"].rsplit(".", 1)[0] + ".250"


def sdk_config_text(url: str) -> str:
    return json.dumps(sdk_config(url, server_host="127.100.0.9"), indent=4)


def jlist(client: Any) -> dict[str, Any]:
    code, output = run(client, "pm2 jlist")
    assert code == 0, output
    return next(app for app in json.loads(output) if app["name"] == "weapp")


# ---- the real routes and answers -----------------------------------------------------------------
def test_the_node_demo_serves_only_its_real_routes(seeded: dict[str, Any]) -> None:
    home = business_get(seeded, "/")
    assert home.status_code == 200 and "腾讯云微信小程序服务器 Demo - Node.js" in home.text
    login = business_get(seeded, "/login")  # no headers: refused without an auth call
    assert login.status_code == 200
    assert login.json()[MAGIC] == 1 and login.json()["error"] == "ERR_LOGIN_FAILED"
    user = business_get(seeded, "/user", headers=BOGUS)  # the session service's verdict, through authServerUrl
    assert user.status_code == 200
    assert user.json()["error"] == "ERR_INVALID_SESSION"
    assert user.json()["message"] == "鉴权服务调用失败：60012 - AUTH_FAIL"
    for missing in ("/health", "/mina_auth/health", "/mina_auth/"):
        assert business_get(seeded, missing).status_code == 404


def test_session_server_refuses_port_80_from_addresses_its_group_does_not_admit(seeded: dict[str, Any]) -> None:
    session = seeded["session_server"]
    url = session["url"] + "/mina_auth/"
    for stranger in ("127.0.0.1", unused_address(seeded)):  # the test host, an address like a CLB VIP's
        with from_address(stranger) as http, pytest.raises(httpx.TransportError):
            http.post(url, json=MA_AUTH)
    with from_address(seeded["business_server"]["private_ip"]) as http:
        assert http.post(url, json=MA_AUTH).json()["returnCode"] == 60012
        assert http.get(session["url"] + "/mina_auth/health").status_code == 404  # no health endpoint ...
        assert http.get(session["url"] + "/health").status_code == 404  # ... and nothing outside /mina_auth/


def test_the_ma_protocol_as_the_real_mina_auth_answers_it(seeded: dict[str, Any]) -> None:
    url = seeded["session_server"]["url"] + "/mina_auth/"
    with from_address(seeded["business_server"]["private_ip"]) as http:
        login = http.post(url, json=login_request("wx-code-1"))
        assert login.status_code == 200 and "content-type" not in login.headers
        body = login.json()
        assert (body["version"], body["componentName"], body["returnCode"]) == (1, "MA", 0)
        session = body["returnData"]
        assert {"id", "skey", "user_info"} <= set(session) and session["user_info"]["openId"]
        check = http.post(url, json=check_request(session["id"], session["skey"])).json()
        assert check["returnCode"] == 0 and check["returnData"]["user_info"] == session["user_info"]
        assert http.post(url, json=check_request(session["id"], "0" * 40)).json()["returnCode"] == 60012
        answers = {
            "GET": http.get(url),
            "not json": http.post(url, content=b"not json"),
            "no interfaceName": http.post(url, json={"version": 1, "interface": {"para": {}}}),
            "no para": http.post(url, json={"interface": {"interfaceName": "qcloud.cam.auth"}}),
            "unknown": http.post(url, json={"interface": {"interfaceName": "qcloud.cam.nope", "para": {}}}),
            "auth without id": http.post(url, json={"interface": {"interfaceName": "qcloud.cam.auth", "para": {}}}),
            "bogus session": http.put(url, json=MA_AUTH),
        }
    codes = {name: (a.status_code, a.json()["returnCode"], a.json()["componentName"]) for name, a in answers.items()}
    assert codes == {
        "GET": (200, 1009, "MA"),
        "not json": (200, 1009, "MA"),
        "no interfaceName": (200, 1002, "MA"),
        "no para": (200, 1011, "MA"),
        "unknown": (200, 1010, "MA"),
        "auth without id": (200, 1003, "MA"),
        "bogus session": (200, 60012, "MA"),
    }
    assert answers["bogus session"].json()["returnMessage"] == "AUTH_FAIL"


def test_a_real_login_through_the_business_server(sandbox: Any, seeded: dict[str, Any]) -> None:
    login = httpx.post(
        seeded["business_server"]["url"] + "/login",
        headers={"X-WX-Code": "code-42", "X-WX-Encrypted-Data": "data", "X-WX-IV": "iv"},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    session = login.json()["session"]
    assert login.json()[MAGIC] == 1 and session["id"] and session["skey"]
    user = business_get(seeded, "/user", headers={"X-WX-Id": session["id"], "X-WX-Skey": session["skey"]})
    assert user.status_code == 200 and user.json()["code"] == 0 and user.json()["data"]["userInfo"]["openId"]
    guests = {s["instance_id"]: s for s in sandbox.admin("GET", "guests")["servers"]}
    assert guests[seeded["session_server"]["instance_id"]]["apps"]["mina_auth"]["loaded"]["logins"] == 1

    sandbox.admin("POST", "clock", {"advance": 7201})  # sessions last 7200 s
    expired = business_get(seeded, "/user", headers={"X-WX-Id": session["id"], "X-WX-Skey": session["skey"]})
    assert expired.json()["error"] == "ERR_INVALID_SESSION" and "60011" in expired.json()["message"]


# ---- restarts over SSH, as pm2 reports them ------------------------------------------------------
def test_pm2_start_restarts_the_demo_with_the_rewritten_sdk_config(sandbox: Any, seeded: dict[str, Any]) -> None:
    business = seeded["business_server"]
    dead = f"http://{unused_address(seeded)}/mina_auth/"  # nobody there
    write_remote(sandbox, seeded, "business", business["sdk_config"], sdk_config_text(dead))
    assert business_get(seeded, "/user", headers=BOGUS).json()["error"] == "ERR_INVALID_SESSION"  # loaded at start

    with ssh(sandbox, seeded, "business") as client:
        before = jlist(client)
        assert before["pm2_env"]["status"] == "online" and before["pid"] > 0
        code, output = run(client, RESTART)
        assert code == 0 and "weapp" in output and "online" in output, output
        after = jlist(client)
    assert after["pm2_env"]["status"] == "online"
    assert after["pid"] != before["pid"] and after["pm2_env"]["pm_uptime"] >= before["pm2_env"]["pm_uptime"]
    assert after["pm2_env"]["restart_time"] == before["pm2_env"]["restart_time"] + 1
    user = business_get(seeded, "/user", headers=BOGUS).json()  # the app starts; every check fails, saying why
    assert user["error"] == "ERR_CHECK_LOGIN_FAILED" and "ECONNREFUSED" in user["message"]


def test_an_unparseable_sdk_config_makes_pm2_restart_the_demo_until_it_gives_up(
    sandbox: Any, seeded: dict[str, Any]
) -> None:
    write_remote(sandbox, seeded, "business", seeded["business_server"]["sdk_config"], '{"authServerUrl": ')
    with ssh(sandbox, seeded, "business") as client:
        code, output = run(client, RESTART)
        assert code == 0, output  # pm2 launched it: the crash is the app's
        errored = poll("pm2 to give up", lambda: (app := jlist(client))["pm2_env"]["status"] == "errored" and app)
        assert errored["pm2_env"]["restart_time"] >= 15 and errored["pid"] == 0
        code, log = run(client, "cat /root/.pm2/logs/weapp-error.log")
        assert code == 0 and "SDK 配置文件（/etc/qcloud/sdk.config）内容不合法" in log
    with pytest.raises(httpx.TransportError):  # nothing listens on 5757
        business_get(seeded, "/")


def test_an_injected_crash_is_restarted_by_pm2(sandbox: Any, seeded: dict[str, Any]) -> None:
    rule = {"service": "guest", "action": "weapp.restart", "error_message": "out of memory", "count": 1}
    sandbox.admin("POST", "faults", rule)
    with ssh(sandbox, seeded, "business") as client:
        first = jlist(client)
        code, output = run(client, RESTART)
        assert code == 0, output
        back = poll("pm2 to bring it back", lambda: (app := jlist(client))["pid"] and app)
        assert back["pm2_env"]["restart_time"] >= first["pm2_env"]["restart_time"] + 2
    assert business_get(seeded, "/").status_code == 200


def test_a_malformed_config_at_boot_keeps_the_app_down_until_fixed(
    sandbox: Any, client: Any, seeded: dict[str, Any]
) -> None:
    business = seeded["business_server"]
    instance_id = business["instance_id"]
    write_remote(sandbox, seeded, "business", business["sdk_config"], "not json at all")

    def state() -> str:
        return (
            {s["instance_id"]: s for s in sandbox.admin("GET", "guests")["servers"]}.get(instance_id, {})
            .get("apps", {})
            .get("weapp", {})
            .get("state", "")
        )

    cvm_call(client, "RebootInstances", {"InstanceIds": [instance_id]})
    poll("the demo errored after the reboot", lambda: state() == "errored")
    write_remote(sandbox, seeded, "business", business["sdk_config"], sdk_config_text(seeded["auth_server_url"]))
    cvm_call(client, "RebootInstances", {"InstanceIds": [instance_id]})

    def home() -> bool:
        try:
            return business_get(seeded, "/").status_code == 200
        except httpx.TransportError:
            return False

    poll("auto-start after the fix: nobody ran pm2", home)


def admit_from_anywhere(client: Any, group_id: str, port: int) -> None:
    request = vpc_models.CreateSecurityGroupPoliciesRequest()
    request.from_json_string(
        json.dumps(
            {
                "SecurityGroupId": group_id,
                "SecurityGroupPolicySet": {
                    "Ingress": [{"Protocol": "TCP", "Port": str(port), "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}]
                },
            }
        )
    )
    client(vpc_client.VpcClient).CreateSecurityGroupPolicies(request)


def test_java_flavour_on_tomcat(sandbox: Any, client: Any, seeded: dict[str, Any]) -> None:
    admit_from_anywhere(client, seeded["security_groups"]["business"], 8080)
    unit = {"name": "tomcat", "kind": "weapp", "manager": "systemd", "config": "/etc/qcloud/sdk.config"}
    write_remote(sandbox, seeded, "business", "/etc/sandbox/units/tomcat.json", json.dumps(unit))
    show = "systemctl show tomcat -p ActiveState,ActiveEnterTimestamp,MainPID"
    tomcat = seeded["business_server"]["url"].rsplit(":", 1)[0] + ":8080"
    with ssh(sandbox, seeded, "business") as shell:
        code, output = run(shell, "pm2 stop weapp && systemctl daemon-reload && systemctl restart tomcat")
        assert code == 0, output
        code, output = run(shell, show)
        lines = dict(line.split("=", 1) for line in output.strip().splitlines())
        assert code == 0 and lines["ActiveState"] == "active" and int(lines["MainPID"]) > 0
        assert lines["ActiveEnterTimestamp"].endswith(" UTC") and len(lines["ActiveEnterTimestamp"].split()) == 4
        assert httpx.get(f"{tomcat}/", timeout=10).status_code == 404  # no "/" in the Java flavour
        user = httpx.get(f"{tomcat}/user", headers=BOGUS, timeout=10).json()
        assert user["message"] == "调用鉴权服务失败：#60012 - AUTH_FAIL"

        code, output = run(shell, "echo '// comment' > /etc/qcloud/sdk.config && systemctl restart tomcat")
        assert code == 0, output  # org.json refuses it: only printed, the app starts unconfigured
        user = httpx.get(f"{tomcat}/user", headers=BOGUS, timeout=10).json()
        assert user["error"] == "ERR_CHECK_LOGIN_FAILED" and "SDK" in user["message"]
        code, again = run(shell, show)
        assert dict(line.split("=", 1) for line in again.strip().splitlines())["MainPID"] != lines["MainPID"]
        code, output = run(shell, "systemctl stop tomcat && " + show)
        assert "ActiveState=inactive" in output and "MainPID=0" in output
        assert run(shell, "systemctl restart nosuchunit")[0] != 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{tomcat}/user", timeout=5)


def test_curl_on_a_server_reaches_urls_from_its_own_address(sandbox: Any, seeded: dict[str, Any]) -> None:
    body = json.dumps(MA_AUTH)
    auth = seeded["auth_server_url"]  # the real URL, port 80
    with ssh(sandbox, seeded, "business") as client:
        command = f"curl -sS -m 5 -X POST -H 'Content-Type: application/json' -d '{body}' {auth}"
        code, output = run(client, command)
        assert code == 0 and json.loads(output)["returnCode"] == 60012, output
        refused = f"http://{unused_address(seeded)}:5757/"
        code, output = run(client, f"curl -sS -m 5 {refused}")
        assert code == 7 and "curl: (7)" in output
    with ssh(sandbox, seeded, "session") as client:  # the session group does not admit its own server
        code, output = run(client, f"curl -sS -m 5 -X POST -d '{body}' {auth}")
        assert code in (7, 56) and "curl:" in output


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
    port = seeded["ports"]["map"]["80"]
    with from_address(business["private_ip"]) as http:
        opened = http.post(session["url"] + "/mina_auth/", json=login_request("code-7")).json()["returnData"]
        for address in addresses:
            url = f"http://{address}:{port}/mina_auth/"

            def answers(url: str = url) -> Any:
                try:
                    return http.post(url, json=MA_AUTH).json()
                except httpx.TransportError:
                    return None

            assert poll(f"the auth service on {address}", answers)["returnCode"] == 60012
            # The clone shares the image's session secret: a session opened on the original is known here.
            known = http.post(url, json=check_request(opened["id"], opened["skey"])).json()
            assert known["returnCode"] == 0
