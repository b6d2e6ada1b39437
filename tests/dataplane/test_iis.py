"""The IIS flavour through the guest supervisor (what both exec modes call): app-pool recycle, w3wp, PowerShell.

Windows servers take no key pair and the sandbox's SSH offers them a password only; the supervisor is
what `powershell` reaches in either shell mode, so it is driven directly here.
"""

import asyncio
import json
import shlex
import socket
from pathlib import Path

import pytest

from sandbox.core.emulated_cloud import Cloud, SandboxConfig
from sandbox.cvm.instances import LaunchSpec
from sandbox.dataplane.apps.layout import guest_path, install_weapp, sdk_config
from sandbox.dataplane.apps.powershell import is_web_request, script_of
from sandbox.dataplane.guests import Guests
from sandbox.dataplane.net import http_probe
from sandbox.dataplane.ports import PortMap
from tasks.apps import from_w3wp, reach_command
from tasks.models import runtime_profile

MAGIC = "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A"
GET_W3WP = (
    "Get-Process -Name w3wp -ErrorAction SilentlyContinue | Select-Object Id,StartTime | ConvertTo-Json -Compress"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def powershell(script: str) -> list[str]:
    return ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]


@pytest.mark.sandbox  # a cloud and its guests, in this process
def test_iis_recycles_its_pool_and_starts_w3wp_at_the_next_request(tmp_path: Path) -> None:
    cloud = Cloud(SandboxConfig(dataplane=False))
    region = "ap-guangzhou"
    instance_id = cloud.cvm.run_instances(region, LaunchSpec(zone="ap-guangzhou-4", image_id="img-9id7emv7"), 1, "r1")[
        0
    ]
    cloud.advance(force=True)
    instance = cloud.cvm.instance(region, instance_id)
    disk = tmp_path / "disk"
    install_weapp(disk, "windows", sdk_config("http://127.0.0.1:1/mina_auth/", "127.100.0.9"))
    ports = PortMap(http_port=free_port())  # real port 80 is served here
    base = f"http://{instance.private_ip}:{ports.listen(80)}"

    async def scenario() -> None:
        guests = Guests(cloud, ports)
        try:
            await guests.boot(instance, disk)
            assert await guests.control(instance_id, powershell(GET_W3WP), "C:\\") == (0, "")  # no request yet
            login = await http_probe(None, f"{base}/login")
            assert login.status == 200 and login.json()[MAGIC] == 1 and login.json()["error"] == "ERR_LOGIN_FAILED"
            code, first = await guests.control(instance_id, powershell(GET_W3WP), "C:\\")
            worker = json.loads(first)
            assert code == 0 and set(worker) == {"Id", "StartTime"} and "\\/Date(" in first
            assert from_w3wp(first).running

            recycle = powershell("Restart-WebAppPool -Name 'DefaultAppPool'")
            assert await guests.control(instance_id, recycle, "C:\\") == (0, "")
            assert await guests.control(instance_id, powershell(GET_W3WP), "C:\\") == (0, "")
            home = await http_probe(None, f"{base}/")
            assert home.status == 200 and "Demo" in home.text()
            second = json.loads((await guests.control(instance_id, powershell(GET_W3WP), "C:\\"))[1])
            assert second["Id"] != worker["Id"]

            user = await http_probe(None, f"{base}/user", headers={"X-WX-Id": "a", "X-WX-Skey": "b"})
            assert user.json()["error"] == "ERR_CHECK_LOGIN_FAILED"  # its authServerUrl is dead: it says so
            assert (await http_probe(None, f"{base}/health")).status == 404

            # Invoke-WebRequest from the server itself, as tcscale's reach check sends it
            url = f"http://{instance.private_ip}/login"
            argv = shlex.split(reach_command(runtime_profile("dotnet-iis"), url, 3))
            assert is_web_request(script_of(argv[1:]))
            code, output = await guests.control(instance_id, argv, "C:\\")
            assert code == 0 and json.loads(output)[MAGIC] == 1
            dead = shlex.split(reach_command(runtime_profile("dotnet-iis"), "http://127.0.0.1:1/mina_auth/", 3))
            code, output = await guests.control(instance_id, dead, "C:\\")
            assert code == 1 and output.startswith("Invoke-WebRequest : Unable to connect to the remote server")

            # Json.NET tolerates comments; a broken file fails every request of the new worker
            config = guest_path(disk, "C:\\qcloud\\sdk.config")
            config.write_text('{\r\n  // comment\r\n  "authServerUrl": "http://127.0.0.1:1/mina_auth/"\r\n}\r\n')
            await guests.control(instance_id, recycle, "C:\\")
            assert (await http_probe(None, f"{base}/login")).status == 200
            config.write_text("{")
            await guests.control(instance_id, recycle, "C:\\")
            assert (await http_probe(None, f"{base}/login")).status == 500

            restart = powershell("Restart-WebItem 'IIS:\\Sites\\Default Web Site'")  # the old way still works
            assert await guests.control(instance_id, restart, "C:\\") == (0, "")
            code, output = await guests.control(instance_id, powershell("Restart-WebAppPool -Name 'Nope'"), "C:\\")
            assert code == 1 and "does not exist" in output
        finally:
            await guests.stop()

    asyncio.run(scenario())
