"""SSH to the sandbox's real servers (asyncssh listeners, real guests): host-key policies, the sdk.config
rewrite with backup and restore, commands and restarts of the three runtime profiles, and failures.

Servers come from the seed admin route (the guide's starting point) in a VPC of their own, so they
never share an address with another sandbox on this machine.
"""

import codecs
import contextlib
import hashlib
import ipaddress
import json
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableUpdate
from pydantic import BaseModel, ValidationError
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.vpc.v20170312.vpc_client import VpcClient

from tasks import config_rewrite, remote, ssh_keys
from tasks.cloud import call
from tasks.models import HostKeyPolicy, SshSettings, runtime_profile
from tasks.sdkconfig import SdkConfigError
from tasks.waiters import wait_all, wait_until

SDK_CONFIG = "/etc/qcloud/sdk.config"
NEW_URL = "http://127.0.9.9/mina_auth/"  # only loaded, never called: outside every sandbox VPC and public pool


def servers_view(sandbox) -> dict[str, Any]:
    return sandbox.admin("GET", "servers")


def known_hosts(sandbox) -> list[str]:
    return [line for server in servers_view(sandbox)["servers"] for line in server["known_hosts"]]


def guest_app(sandbox, instance_id: str, app: str) -> dict[str, Any]:
    for server in sandbox.admin("GET", "guests")["servers"]:
        if server["instance_id"] == instance_id:
            return server["apps"][app]
    raise AssertionError(f"{instance_id} is not running")


@pytest.fixture
def seeded(sandbox, tmp_path) -> dict[str, Any]:
    if not servers_view(sandbox).get("dataplane"):
        pytest.skip("the sandbox runs without its data plane")
    # The seed's own VPC: it claims a /16 no other sandbox on this host holds. A named one (127.{65 + pid % 30} here
    # once) is not claimed: another xdist worker's seed took the same addresses and the two apps fought over 5757.
    body = {"key_file": str(tmp_path / "guide.pem")}
    answer = httpx.post(f"{sandbox.url}/_sandbox/seed", json=body, timeout=60)
    assert answer.status_code == 200, f"seed failed: {answer.text}"
    return answer.json()


@pytest.fixture
def ssh(sandbox, seeded, tmp_path) -> SshSettings:
    return SshSettings(
        port=seeded["ports"]["ssh"],
        key_file=seeded["key_pair"]["private_key_file"],
        known_hosts=known_hosts(sandbox),
        connect_timeout=5,
    )


def business(seeded) -> tuple[str, str]:
    return seeded["business_server"]["private_ip"], seeded["business_server"]["instance_id"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the guide's rewrite, verified and undone ----------------------------------------------------------
def test_rewrite_restart_and_restore_on_the_business_server(sandbox, seeded, ssh):
    host, instance_id = business(seeded)
    profile = runtime_profile("node-pm2")
    with remote.session(host, ssh, profile, instance_id) as conn:
        original = remote.read_file(conn, SDK_CONFIG)
        change = config_rewrite.rewrite_sdk_config(conn, SDK_CONFIG, "authServerUrl", NEW_URL, instance_id=instance_id)
        assert change.changed and change.applied and change.before == seeded["auth_server_url"]
        assert (change.host, change.instance_id, change.path) == (host, instance_id, SDK_CONFIG)
        rewritten = remote.read_file(conn, SDK_CONFIG)
        assert rewritten == original.replace(seeded["auth_server_url"].encode(), NEW_URL.encode())
        assert sha(rewritten) == change.after_sha256 and sha(original) == change.before_sha256
        assert remote.read_file(conn, change.backup_path) == original
        assert conn.sftp().stat(SDK_CONFIG).st_mode == conn.sftp().stat(change.backup_path).st_mode

        result = remote.restart(conn, profile)
        assert result.exit == 0 and "weapp" in result.stdout
        app = guest_app(sandbox, instance_id, "weapp")
        assert app["state"] == "online" and app["loaded"]["authServerUrl"] == NEW_URL and app["restarts"] == 1

        assert config_rewrite.restore(conn, change) is True
        assert remote.read_file(conn, SDK_CONFIG) == original
        assert config_rewrite.restore(conn, change) is False  # already as it was
        remote.restart(conn, profile)
        assert guest_app(sandbox, instance_id, "weapp")["loaded"]["authServerUrl"] == seeded["auth_server_url"]


def test_ssh_refused_while_sshd_is_down_then_back(sandbox, seeded, ssh):
    """The sandbox's `ssh` / `connect` fault: the connection that meets it is dropped and the server refuses
    connections (ECONNREFUSED, not a drop) for `latency_ms`, then listens again, as during an sshd restart."""
    host, instance_id = business(seeded)
    rule = {"service": "ssh", "action": f"{instance_id}/connect", "latency_ms": 1500, "count": 1}
    sandbox.admin("POST", "faults", rule)
    with pytest.raises(remote.RemoteError):
        remote.connect(host, ssh, instance_id=instance_id)
    with pytest.raises(remote.RemoteError, match="refused"):
        remote.connect(host, ssh, instance_id=instance_id)

    def connects() -> bool:
        try:
            remote.connect(host, ssh, instance_id=instance_id).close()
        except remote.RemoteError:
            return False
        return True

    wait_until(connects, done=bool, failed=lambda _: None, what="sshd back", timeout=10, first_delay=0.1, max_delay=0.3)


def test_an_unchanged_value_writes_nothing_and_a_dry_run_only_plans(seeded, ssh):
    host, instance_id = business(seeded)
    with remote.session(host, ssh, instance_id=instance_id) as conn:
        before = sorted(conn.sftp().listdir("/etc/qcloud"))
        same = config_rewrite.rewrite_sdk_config(conn, SDK_CONFIG, "authServerUrl", seeded["auth_server_url"])
        assert not same.changed and same.backup_path is None and same.before_sha256 == same.after_sha256
        plan = config_rewrite.rewrite_sdk_config(conn, SDK_CONFIG, "authServerUrl", NEW_URL, dry_run=True)
        assert plan.changed and not plan.applied and plan.after == NEW_URL and plan.backup_path is None
        assert sorted(conn.sftp().listdir("/etc/qcloud")) == before
        assert config_rewrite.restore(conn, plan) is False


def test_a_corrupt_config_is_refused_with_its_path_and_left_alone(seeded, ssh):
    host, instance_id = business(seeded)
    with remote.session(host, ssh, instance_id=instance_id) as conn:
        broken = b'{\n  "authServerUrl": "http://old/mina_auth/",\n  "networkTimeout": 30000,\n}\n'
        with conn.sftp().open(SDK_CONFIG, "wb") as file:
            file.write(broken)
        with pytest.raises(SdkConfigError) as info:
            config_rewrite.rewrite_sdk_config(conn, SDK_CONFIG, "authServerUrl", NEW_URL)
        where = ssh_keys.known_host_name(host, ssh.port)
        assert str(info.value).startswith(f"{where}:{SDK_CONFIG}: not valid JSON")
        assert "line 4 column 1" in str(info.value)
        assert remote.read_file(conn, SDK_CONFIG) == broken
        assert not [name for name in conn.sftp().listdir("/etc/qcloud") if "tcscale" in name]


def test_restore_refuses_to_undo_someone_elses_later_change(seeded, ssh):
    host, instance_id = business(seeded)
    with remote.session(host, ssh, instance_id=instance_id) as conn:
        change = config_rewrite.rewrite_sdk_config(conn, SDK_CONFIG, "authServerUrl", NEW_URL)
        with conn.sftp().open(SDK_CONFIG, "wb") as file:
            file.write(b'{"authServerUrl": "http://someone-else/"}')
        with pytest.raises(remote.RemoteError, match="changed since tcscale rewrote it"):
            config_rewrite.restore(conn, change)
        assert config_rewrite.restore(conn, change, force=True) is True
        assert sha(remote.read_file(conn, SDK_CONFIG)) == change.before_sha256


def test_restore_refuses_over_a_later_value_of_the_key(seeded, ssh):
    """Only authServerUrl differs from the backup, but it holds a value set by hand since: not ours to undo."""
    host, instance_id = business(seeded)
    with remote.session(host, ssh, instance_id=instance_id) as conn:
        change = config_rewrite.rewrite_sdk_config(conn, SDK_CONFIG, "authServerUrl", NEW_URL, backup_tag="run-1")
        backups = config_rewrite.backups(conn, SDK_CONFIG, "run-1")
        assert config_rewrite.written_values(conn, backups, "authServerUrl") == [NEW_URL]
        by_hand = remote.read_file(conn, SDK_CONFIG).replace(NEW_URL.encode(), b"http://by-hand/mina_auth/")
        with conn.sftp().open(SDK_CONFIG, "wb") as file:
            file.write(by_hand)
        with pytest.raises(config_rewrite.EditedSinceRun, match="by-hand") as refused:
            config_rewrite.restore(conn, change)
        assert refused.value.backup_path == change.backup_path and change.backup_path in str(refused.value)
        assert remote.read_file(conn, SDK_CONFIG) == by_hand
        assert config_rewrite.restore(conn, change, force=True) is True
        assert sha(remote.read_file(conn, SDK_CONFIG)) == change.before_sha256


def test_bom_and_crlf_survive_the_rewrite_over_sftp(seeded, ssh):
    host, instance_id = business(seeded)
    text = '{\r\n\t"authServerUrl": "http://old/mina_auth/", // the VIP\r\n\t"networkTimeout": 30000\r\n}'
    original = codecs.BOM_UTF8 + text.encode()
    with remote.session(host, ssh, instance_id=instance_id) as conn:
        install_over_sftp(conn, {"/C:/qcloud/sdk.config": original})
        change = config_rewrite.rewrite_sdk_config(conn, "C:\\qcloud\\sdk.config", "authServerUrl", NEW_URL)
        assert change.path == "/C:/qcloud/sdk.config" and change.backup_path.startswith("/C:/qcloud/sdk.config.")
        rewritten = remote.read_file(conn, "/C:/qcloud/sdk.config")
        assert rewritten == original.replace(b"http://old/mina_auth/", NEW_URL.encode())
        assert config_rewrite.restore(conn, change) and remote.read_file(conn, "C:\\qcloud\\sdk.config") == original


# ---- host keys and authentication ----------------------------------------------------------------------
def test_strict_refuses_an_unknown_or_wrong_host_key(sandbox, seeded, ssh):
    host, _ = business(seeded)
    with pytest.raises(remote.RemoteError, match="host key unknown \\(policy strict\\)"):
        remote.connect(host, ssh.model_copy(update={"known_hosts": []}))
    session_ip = seeded["session_server"]["private_ip"]
    session_name, business_name = (ssh_keys.known_host_name(ip, ssh.port) for ip in (session_ip, host))
    other_key = next(line for line in ssh.known_hosts if line.split()[0] == session_name)
    forged = f"{business_name} {other_key.split(' ', 1)[1]}"
    with pytest.raises(remote.RemoteError, match="host key mismatch"):
        remote.connect(host, ssh.model_copy(update={"known_hosts": [forged]}))


def variable(name: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_variable_by_name(name)
    return None if found is None else found.value


def test_tofu_records_per_instance_in_prefect_then_verifies_strictly(prefect_harness, seeded, ssh):
    host, instance_id = business(seeded)
    prefix = f"tcscale-test-{uuid.uuid4().hex[:8]}"  # the harness's database outlives the sandbox's reset
    tofu = ssh.model_copy(update={"known_hosts": [], "host_key_policy": HostKeyPolicy.tofu, "tofu_variable": prefix})
    with remote.session(host, tofu, instance_id=instance_id) as conn:
        line = ssh_keys.host_key_line(conn)
    assert line in ssh.known_hosts  # what was trusted is the server's real key
    assert variable(f"{prefix}-{instance_id}") == line  # kept where every worker sees it
    with remote.session(host, tofu, instance_id=instance_id):
        pass  # verified against the record
    # a recorded key that is not the server's (as if the address now answered for another server)
    session_ip = seeded["session_server"]["private_ip"]
    other = next(line for line in ssh.known_hosts if line.startswith((f"[{session_ip}]", f"{session_ip} ")))
    forged = f"{line.split()[0]} {other.split(' ', 1)[1]}"
    with get_client(sync_client=True) as client:
        client.update_variable(VariableUpdate(name=f"{prefix}-{instance_id}", value=forged))
    with pytest.raises(remote.RemoteError, match="host key mismatch"):
        remote.connect(host, tofu, instance_id=instance_id)
    with pytest.raises(remote.RemoteError, match="per instance id"):
        remote.connect(host, tofu)  # an address is reused by the next server: tofu needs the instance id


def test_tofu_keeps_the_first_key_recorded_when_runs_race(prefect_harness):
    """Runs meeting the same new servers at once: one key per server is trusted, and no record is lost."""
    store = ssh_keys.TofuStore(f"tcscale-test-{uuid.uuid4().hex[:8]}")
    # Two runs on each of six servers: 12 writes at once. At 24 (4 keys), after a worker's flow tests, 2 rounds in 6
    # stalled 63 s (0 in 6 at 12): more writes than the SQLite test server's connection pool (5 + 10) can wait out
    # SQLite's 60 s busy timeout. A Prefect limit on SQLite, not the store's; teams run PostgreSQL (docs/team-setup.md).
    keys = [paramiko.ECDSAKey.generate() for _ in range(2)]
    instances = [f"ins-race{n}" for n in range(6)]
    outcomes: dict[tuple[str, int], paramiko.PKey] = {}
    start = threading.Barrier(len(keys) * len(instances))

    def record(instance_id: str, n: int) -> None:
        start.wait()
        outcomes[instance_id, n] = store.record(instance_id, "[127.0.0.9]:22", keys[n])

    threads = [threading.Thread(target=record, args=(i, n)) for i in instances for n in range(len(keys))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for instance_id in instances:
        kept = store.get(instance_id)
        assert kept is not None and any(kept == key for key in keys)
        assert all(outcomes[instance_id, n] == kept for n in range(len(keys)))  # every run checks against it


def test_insecure_is_an_explicit_opt_in_that_warns(seeded, ssh):
    host, _ = business(seeded)
    insecure = ssh.model_copy(update={"known_hosts": [], "host_key_policy": HostKeyPolicy.insecure})
    with pytest.warns(UserWarning, match="insecure: accepting"), remote.session(host, insecure) as conn:
        assert remote.run(conn, "echo hi").stdout.strip() == "hi"


def test_a_key_from_a_secret_block_works_and_a_wrong_key_is_named_without_showing_it(prefect_harness, seeded, ssh):
    host, _ = business(seeded)
    text = Path(seeded["key_pair"]["private_key_file"]).read_text()
    block = f"tcscale-test-key-{uuid.uuid4().hex[:8]}"
    Secret(value=text).save(block)
    from_block = ssh.model_copy(update={"key_file": None, "key_secret_block": block})
    with remote.session(host, from_block) as conn:
        assert remote.run(conn, "echo ok").stdout.strip() == "ok"
    wrong = paramiko.RSAKey.generate(2048)  # a key the server does not know
    with pytest.raises(remote.RemoteError) as info:
        remote.connect(host, ssh, pkey=wrong)
    assert "authentication failed for user 'root'" in str(info.value)
    assert text.splitlines()[1][:20] not in str(info.value) and "PRIVATE" not in str(info.value)
    Secret(value="not a key").save(block, overwrite=True)
    with pytest.raises(ValueError, match="not an Ed25519, ECDSA or RSA key") as info:
        remote.connect(host, from_block)
    assert "not a key" not in str(info.value)


def test_a_key_file_under_home_is_read_on_the_worker(monkeypatch, tmp_path, seeded, ssh):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(seeded["key_pair"]["private_key_file"], home / ".ssh" / "weapp.pem")
    monkeypatch.setenv("HOME", str(home))
    settings = SshSettings.model_validate({**ssh.model_dump(), "key_file": "~/.ssh/weapp.pem"})
    assert settings.key_file == home / ".ssh" / "weapp.pem"
    with remote.session(business(seeded)[0], settings) as conn:
        assert remote.run(conn, "echo ok").stdout.strip() == "ok"
    missing = settings.model_copy(update={"key_file": home / "absent.pem"})
    with pytest.raises(ValueError, match=f"cannot read the private key file {re.escape(str(home))}/absent.pem"):
        remote.connect(business(seeded)[0], missing)


class FlowParameters(BaseModel):
    ssh: SshSettings


def test_no_secret_is_a_parameter_and_the_refusal_quotes_none():
    """Flow parameters are stored in the clear: a key or password given as one is refused, unquoted, even by the
    enclosing parameters' error (pydantic quotes the input of whatever fails)."""
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    cases = [("private_key", pem, "key_secret_block"), ("password", "Hunter-2024!", "password_file")]
    for field, value, instead in cases:
        for validate in (SshSettings.model_validate, lambda ssh: FlowParameters.model_validate({"ssh": ssh})):
            with pytest.raises(ValidationError) as info:
                validate({"port": 22, field: value})
            message = str(info.value)
            assert f"`{field}` is not a parameter" in message and instead in message
            assert value not in message and "b3BlbnNzaC1rZXkt" not in message
    with pytest.raises(ValidationError, match="Extra inputs are not permitted") as info:
        FlowParameters.model_validate({"ssh": {"pasword": "Hunter-2024!"}})  # misspelt: refused, not quoted either
    assert "Hunter-2024!" not in str(info.value)
    assert "password" not in SshSettings.model_json_schema()["properties"]  # not in the run form
    with pytest.raises(ValidationError, match="not both"):
        SshSettings(key_file="/k.pem", key_secret_block="k")
    with pytest.raises(ValidationError, match="not both"):
        SshSettings(password_file="/p.txt", password_secret_block="p")
    expanded = SshSettings(password_file="~/pw.txt", known_hosts_file="~/kh")
    assert (expanded.password_file, expanded.known_hosts_file) == (Path.home() / "pw.txt", Path.home() / "kh")


def test_a_password_file_gives_its_first_line(tmp_path):
    file = tmp_path / "pw.txt"
    file.write_text("Iis-Sandbox-2024!\r\n")
    assert ssh_keys.resolve_password(SshSettings(password_file=file)) == "Iis-Sandbox-2024!"
    file.write_text("\n")
    with pytest.raises(ValueError, match=f"the password file {re.escape(str(file))} is empty"):
        ssh_keys.resolve_password(SshSettings(password_file=file))
    with pytest.raises(ValueError, match="cannot read the password file"):
        ssh_keys.resolve_password(SshSettings(password_file=tmp_path / "absent"))
    assert ssh_keys.resolve_password(SshSettings()) is None


def test_connect_errors_and_timeouts_name_the_host(seeded, ssh):
    nowhere = str(ipaddress.ip_network(seeded["subnet"]["cidr_block"])[250])  # no server at this address
    absent = re.escape(ssh_keys.known_host_name(nowhere, ssh.port))
    with pytest.raises(remote.RemoteError, match=f"^{absent}: cannot connect"):
        remote.connect(nowhere, ssh)  # refused at once
    started = time.monotonic()
    with pytest.raises(remote.RemoteError):
        remote.connect("192.0.2.1", ssh.model_copy(update={"connect_timeout": 0.5}))  # TEST-NET: no answer
    assert time.monotonic() - started < 3


# ---- commands --------------------------------------------------------------------------------------------
def test_run_returns_or_raises_naming_host_and_command(seeded, ssh):
    host, _ = business(seeded)
    with remote.session(host, ssh) as conn:
        assert remote.run(conn, "cat /etc/qcloud/sdk.config").stdout.startswith("{")
        exit_code, _, stderr = remote.run(conn, "ls /nowhere", check=False)
        assert exit_code != 0 and "nowhere" in stderr
        with pytest.raises(remote.RemoteCommandFailed) as info:
            remote.run(conn, "ls /nowhere")
        assert str(info.value).startswith(f"{ssh_keys.known_host_name(host, ssh.port)}: `ls /nowhere` exited")
        assert info.value.exit_code == exit_code


def test_a_failed_restart_says_why(sandbox, seeded, ssh):
    # systemd fails the job of a unit that does not start (pm2 would launch, then restart, a crashing app)
    host, instance_id = seeded["session_server"]["private_ip"], seeded["session_server"]["instance_id"]
    fault = {"service": "guest", "action": "mina_auth.restart", "error_message": "port taken"}
    sandbox.admin("POST", "faults", fault)
    profile = runtime_profile("java-tomcat", restart_command="systemctl restart mina_auth")
    with remote.session(host, ssh) as conn, pytest.raises(remote.RemoteCommandFailed) as info:
        remote.restart(conn, profile)
    message = str(info.value)
    assert info.value.exit_code == 1 and "systemctl restart mina_auth" in message and "port taken" in message
    assert guest_app(sandbox, instance_id, "mina_auth")["state"] == "errored"


def test_a_command_that_hangs_times_out(sandbox, seeded, ssh):
    if servers_view(sandbox).get("shell") != "namespace":
        pytest.skip("the sandbox's fallback shell has no `sleep`")
    host, _ = business(seeded)
    started = time.monotonic()
    with remote.session(host, ssh) as conn, pytest.raises(remote.RemoteCommandFailed, match="timed out"):
        remote.run(conn, "sleep 30", timeout=1)
    assert time.monotonic() - started < 10


# ---- the other runtime profiles: Java (tomcat) and .NET (IIS on Windows) ---------------------------------
def launch_beside_the_seed(client, sandbox, seeded, image_id: str) -> tuple[str, str]:
    """A server in the seed's subnet and business group, logging in with the seed's key; (instance id, ip)."""
    cvm = client(cvm_client.CvmClient)
    params = {
        "Placement": {"Zone": seeded["zone"], "ProjectId": seeded["project_id"]},
        "ImageId": image_id,
        "VirtualPrivateCloud": {"VpcId": seeded["vpc"]["vpc_id"], "SubnetId": seeded["subnet"]["subnet_id"]},
        "SecurityGroupIds": [seeded["security_groups"]["business"]],
        "LoginSettings": {"KeyIds": [seeded["key_pair"]["key_id"]]},
        "InternetAccessible": {"InternetMaxBandwidthOut": 0},
    }
    (instance_id,) = call(cvm, "RunInstances", params).InstanceIdSet
    describe = lambda ids: {i.InstanceId: i for i in call(cvm, "DescribeInstances", {"InstanceIds": ids}).InstanceSet}  # noqa: E731
    running = wait_all(describe, [instance_id], lambda i: i.InstanceState == "RUNNING", lambda i: None, "server", 30)
    sandbox.admin("POST", "servers/settle")
    return instance_id, running[instance_id].PrivateIpAddresses[0]


def reboot(client, sandbox, instance_id: str) -> None:
    cvm = client(cvm_client.CvmClient)
    call(cvm, "RebootInstances", {"InstanceIds": [instance_id]})
    wait_until(
        lambda: call(cvm, "DescribeInstances", {"InstanceIds": [instance_id]}).InstanceSet[0],
        lambda i: i.InstanceState == "RUNNING" and i.LatestOperationState == "SUCCESS",
        lambda i: None,
        "reboot",
        30,
        first_delay=0.02,
    )
    sandbox.admin("POST", "servers/settle")


def install_over_sftp(conn, files: dict[str, bytes]) -> None:
    sftp = conn.sftp()
    for path, data in files.items():
        folder = path.rsplit("/", 1)[0]
        parts = [p for p in folder.split("/") if p]
        for depth in range(1, len(parts) + 1):
            with contextlib.suppress(OSError):  # exists
                sftp.mkdir("/" + "/".join(parts[:depth]))
        with sftp.open(path, "wb") as file:
            file.write(data)


@pytest.mark.parametrize("flavour", ["java-tomcat", "dotnet-iis"])
def test_java_and_windows_profiles(client, sandbox, seeded, ssh, flavour):
    """The Java and .NET stacks of the guide, installed over SFTP and started at boot.

    Windows servers take no key pair (Tencent's rule, kept by the sandbox: RunInstances answers
    UnsupportedOperation.KeyPairUnsupportedWindows) and the sandbox's SSH offers no password login,
    so the .NET profile (`C:\\qcloud` as `/C:/qcloud` over SFTP, BOM + CRLF, the PowerShell restart
    of the IIS site) runs on a key-login server carrying the IIS unit: same paths, same commands.
    """
    windows = flavour == "dotnet-iis"
    profile = runtime_profile(flavour, user="root")
    instance_id, ip = launch_beside_the_seed(client, sandbox, seeded, "img-l8og963d")
    ssh = ssh.model_copy(update={"known_hosts": known_hosts(sandbox)})
    unit_name = "Default Web Site" if windows else "tomcat"
    unit = {
        "name": unit_name,
        "kind": "weapp",
        "manager": "iis" if windows else "systemd",
        "config": profile.config_path,
    }
    text = (
        '{\r\n  "serverHost": "x",\r\n  "authServerUrl": "http://old/mina_auth/",\r\n  "networkTimeout": 30000\r\n}\r\n'
    )
    # CRLF on both; no BOM: the sandbox's IIS guest reads the file with json.loads and refuses one
    # (BOM preservation over SSH is checked in test_bom_and_crlf_survive_the_rewrite_over_sftp)
    original = text.encode()
    with remote.session(ip, ssh, profile, instance_id) as conn:
        install_over_sftp(
            conn, {profile.sftp_path: original, f"/etc/sandbox/units/{unit_name}.json": json.dumps(unit).encode()}
        )
    reboot(client, sandbox, instance_id)  # the unit starts at boot
    booted = guest_app(sandbox, instance_id, unit_name)
    assert booted["state"] == "online", booted

    with remote.session(ip, ssh, profile, instance_id) as conn:
        change = config_rewrite.rewrite_sdk_config(conn, profile.config_path, "authServerUrl", NEW_URL)
        assert change.path == profile.sftp_path
        assert remote.read_file(conn, profile.config_path) == original.replace(
            b"http://old/mina_auth/", NEW_URL.encode()
        )
        assert remote.restart(conn, profile).exit == 0
        if windows:  # an app-pool recycle: IIS starts the worker process (which reads sdk.config) at a request
            assert guest_app(sandbox, instance_id, unit_name)["loaded"] == {}
            rule = {"Protocol": "TCP", "Port": "80", "CidrBlock": "0.0.0.0/0", "Action": "ACCEPT"}
            policies = {"SecurityGroupId": seeded["security_groups"]["business"]}
            call(
                client(VpcClient),
                "CreateSecurityGroupPolicies",
                {**policies, "SecurityGroupPolicySet": {"Ingress": [rule]}},
            )
            assert httpx.get(f"http://{ip}:{seeded['ports']['map']['80']}/login", timeout=10).status_code == 200
        app = guest_app(sandbox, instance_id, unit_name)
        assert app["state"] == "online" and app["loaded"]["authServerUrl"] == NEW_URL and app["restarts"] == 1
        assert config_rewrite.restore(conn, change) and remote.read_file(conn, profile.config_path) == original


# ---- one connection per server for a whole run ----------------------------------------------------------
def test_connections_made_at_once_do_not_share_a_config(seeded, ssh):
    # fabric merges into a connection's Config as it is made: one Config shared by threads that connected at once
    # lost its keys mid-merge (a repoint of 101 servers failed: "No attribute or config key found for 'gateway'")
    host, _ = business(seeded)
    with remote.session(host, ssh) as first, remote.session(host, ssh) as second:
        assert first.config is not second.config


def test_a_pool_keeps_one_connection_per_server_for_the_run_and_replaces_a_broken_one(seeded, ssh):
    host, instance_id = business(seeded)
    with remote.pooled() as pool:
        with remote.session(host, ssh, instance_id=instance_id) as first:
            assert remote.run(first, "cat /etc/qcloud/sdk.config").stdout.startswith("{")
        with remote.session(host, ssh, instance_id=instance_id) as again:
            assert again is first and again.is_connected  # reused, not closed between steps
        with remote.session(host, ssh.model_copy(update={"connect_timeout": 4})) as other:
            assert other is not first  # other settings, another connection
        assert len(pool) == 2
        first.client.get_transport().close()  # the connection drops between two steps
        with remote.session(host, ssh, instance_id=instance_id) as fresh:
            assert fresh is not first and remote.run(fresh, "true").exit == 0
        with pytest.raises(remote.RemoteError), remote.session(host, ssh, instance_id=instance_id) as conn:
            conn.client.get_transport().close()  # dropped under a step: the step fails, the pool forgets it
            remote.run(conn, "true")
        with remote.session(host, ssh, instance_id=instance_id) as after:
            assert after is not conn and after.is_connected
    assert not after.is_connected and len(pool) == 0  # the run's end closes them all
