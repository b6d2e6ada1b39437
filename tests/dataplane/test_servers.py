"""Servers you can SSH into: real SDK calls, real SSH (paramiko, strict host keys), real SFTP, real TCP."""

import io
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import cvm_client, models

from sandbox.dataplane.disks import Disks
from sandbox.dataplane.shell import Guest, Shell
from tests.sdk import poll as poll_state
from tests.sdk import strict_ssh_client

PUBLIC_IMAGE = "img-l8og963d"  # CentOS 7.9
WINDOWS_IMAGE = "img-9id7emv7"
ZONE = "ap-guangzhou-3"
DEADLINE = 20.0


# ---- helpers ------------------------------------------------------------------------------------
def call(cvm: Any, action: str, params: dict[str, Any]) -> Any:
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    return getattr(cvm, action)(request)


def poll(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    return poll_state(check, what=what, timeout=deadline)


def instance_states(cvm: Any, ids: list[str]) -> dict[str, str]:
    answer = call(cvm, "DescribeInstances", {"InstanceIds": ids})
    return {i.InstanceId: i.InstanceState for i in answer.InstanceSet}


def wait_state(cvm: Any, ids: list[str], state: str) -> None:
    poll(f"{ids} {state}", lambda: all(instance_states(cvm, ids).get(i) == state for i in ids))


def server(sandbox: Any, instance_id: str, ssh: str = "up") -> dict[str, Any]:
    """The admin API's view of one server, once its SSH is `ssh` (up / down)."""

    def ready() -> dict[str, Any] | None:
        servers = sandbox.admin("GET", "servers")["servers"]
        found = next((s for s in servers if s["instance_id"] == instance_id), None)
        return found if found and found["ssh"] == ssh else None

    try:
        return poll(f"SSH {ssh} on {instance_id}", ready)
    except AssertionError:
        raise AssertionError(f"SSH not {ssh}: {sandbox.admin('GET', 'servers')}") from None


def nodelay_socket(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paramiko never sets it (~90 ms per handshake)
    return sock


def connect(info: dict[str, Any], private_key: str | paramiko.PKey, user: str | None = None) -> paramiko.SSHClient:
    """SSH with strict host-key checking against the known_hosts lines the admin API reports."""
    client = strict_ssh_client(info["known_hosts"])
    host, port = info["private_ip"], info["ssh_port"]
    client.connect(
        host,
        port=port,
        username=user or info["login_user"],
        pkey=parse_key(private_key) if isinstance(private_key, str) else private_key,
        sock=nodelay_socket(host, port),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def parse_key(private_key: str) -> paramiko.PKey:
    """Parse once and reuse: loading an RSA key validates it (~60 ms), far more than the handshake."""
    return paramiko.RSAKey.from_private_key(io.StringIO(private_key))


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=20)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


class Fleet:
    """A key pair and the instances a test launches with it."""

    def __init__(self, sandbox: Any, cvm: Any) -> None:
        self.sandbox, self.cvm = sandbox, cvm
        key = call(cvm, "CreateKeyPair", {"KeyName": f"k{time.monotonic_ns() % 10**9}", "ProjectId": 0}).KeyPair
        self.key_id, self.private_key = key.KeyId, key.PrivateKey
        self.pkey = parse_key(self.private_key)

    def launch(self, image_id: str = PUBLIC_IMAGE, count: int = 1, **extra: Any) -> list[str]:
        params = {
            **extra,
            "Placement": {"Zone": ZONE},
            "ImageId": image_id,
            "InstanceCount": count,
            "LoginSettings": {"KeyIds": [self.key_id]},
        }
        ids = call(self.cvm, "RunInstances", params).InstanceIdSet
        wait_state(self.cvm, ids, "RUNNING")
        return ids

    def ssh(self, instance_id: str) -> paramiko.SSHClient:
        return connect(server(self.sandbox, instance_id), self.pkey)

    def image(self, instance_id: str, name: str) -> str:
        image_id = call(self.cvm, "CreateImage", {"InstanceId": instance_id, "ImageName": name}).ImageId
        poll(
            f"image {image_id} NORMAL",
            lambda: call(self.cvm, "DescribeImages", {"ImageIds": [image_id]}).ImageSet[0].ImageState == "NORMAL",
        )
        return image_id


@pytest.fixture
def fleet(sandbox: Any, client: Any) -> Fleet:
    return Fleet(sandbox, client(cvm_client.CvmClient))


def refused(info: dict[str, Any]) -> bool:
    try:
        nodelay_socket(info["private_ip"], info["ssh_port"]).close()
    except ConnectionRefusedError:
        return True
    return False


# ---- SSH, exec, SFTP ------------------------------------------------------------------------------
def test_ssh_as_root_with_the_key_pair_runs_real_commands_on_the_disk(fleet: Fleet) -> None:
    (instance_id,) = fleet.launch()
    with fleet.ssh(instance_id) as ssh:
        assert run(ssh, "pwd") == (0, "/root\n", "")
        assert run(ssh, "echo x > /data/f && cat /data/f") == (0, "x\n", "")
        assert run(ssh, "test -f /data/f")[0] == 0
        assert run(ssh, "test -f /data/missing")[0] == 1
        assert run(ssh, "cp /data/f /data/g && mv /data/g /tmp/h && sed -i 's/x/y/' /tmp/h && cat /tmp/h")[1] == "y\n"
        assert run(ssh, "mkdir -p /etc/qcloud && echo '{\"a\": 1}' > /etc/qcloud/sdk.config")[0] == 0
        code, _, err = run(ssh, "cat /nonexistent")
        assert code == 1 and "No such file" in err
        assert run(ssh, "hostname")[1].strip().startswith("VM-")
        with ssh.open_sftp() as sftp:
            assert sftp.open("/tmp/h").read() == b"y\n"
            assert json.loads(sftp.open("/etc/qcloud/sdk.config").read()) == {"a": 1}
            with sftp.open("/data/written", "w") as file:
                file.write(b"by sftp\n")
            sftp.posix_rename("/data/written", "/data/renamed")
        assert run(ssh, "cat /data/renamed")[1] == "by sftp\n"


def test_service_manager_shims_reach_the_guest_supervisor(fleet: Fleet) -> None:
    (instance_id,) = fleet.launch()
    with fleet.ssh(instance_id) as ssh:
        code, out, err = run(ssh, "cd /tmp && pm2 list")
        assert code == 0
        assert "unreachable" not in out + err and "supervisor error" not in out + err


def test_a_wrong_key_or_user_is_refused(fleet: Fleet, client: Any) -> None:
    (instance_id,) = fleet.launch()
    info = server(fleet.sandbox, instance_id)
    stranger = call(fleet.cvm, "CreateKeyPair", {"KeyName": "stranger", "ProjectId": 0}).KeyPair
    with pytest.raises(paramiko.AuthenticationException):
        connect(info, stranger.PrivateKey)
    with pytest.raises(paramiko.AuthenticationException):
        connect(info, fleet.private_key, user="admin")


def test_host_keys_are_per_server_and_checked_strictly(fleet: Fleet) -> None:
    first, second = fleet.launch(count=2)
    one, two = server(fleet.sandbox, first), server(fleet.sandbox, second)
    assert one["known_hosts"][0].split()[1:] != two["known_hosts"][0].split()[1:]
    name = one["known_hosts"][0].split()[0]  # `ip`, or `[ip]:port` off port 22
    impostor = {**one, "known_hosts": [f"{name} {' '.join(two['known_hosts'][0].split()[1:])}"]}
    with pytest.raises(paramiko.BadHostKeyException):
        connect(impostor, fleet.private_key)


def test_sftp_cannot_escape_the_disk(fleet: Fleet, tmp_path: Path) -> None:
    (instance_id,) = fleet.launch()
    info = server(fleet.sandbox, instance_id)
    disk = Path(info["disk"])
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (disk / "data" / "absolute-out").symlink_to(secret)
    (disk / "data" / "relative-out").symlink_to("../" * 20 + str(secret).lstrip("/"))
    (disk / "data" / "dir-out").symlink_to(tmp_path)
    (disk / "data" / "write-out").symlink_to(tmp_path / "planted.txt")
    with fleet.ssh(instance_id) as ssh, ssh.open_sftp() as sftp:
        assert sorted(sftp.listdir("/../../..")) == sorted(sftp.listdir("/"))
        assert sftp.normalize("/../../..") == "/"
        assert sftp.open("../../../../etc/passwd").read() == (disk / "etc" / "passwd").read_bytes()
        assert sftp.open(str(Path("/etc/hostname"))).read() == (disk / "etc" / "hostname").read_bytes()
        for link in ("/data/absolute-out", "/data/relative-out", "/data/dir-out/secret.txt"):
            with pytest.raises(FileNotFoundError):
                sftp.open(link).read()
        with pytest.raises(FileNotFoundError):  # the target's folder, resolved inside the disk, does not exist
            sftp.open("/data/write-out", "w").write(b"planted")
        sftp.symlink("/etc/passwd", "/data/guest-link")
        assert sftp.readlink("/data/guest-link") == "/etc/passwd"
        assert sftp.open("/data/guest-link").read() == (disk / "etc" / "passwd").read_bytes()
    assert not (tmp_path / "planted.txt").exists()


def test_a_server_with_a_public_address_answers_on_both(fleet: Fleet) -> None:
    (instance_id,) = fleet.launch(InternetAccessible={"InternetMaxBandwidthOut": 1})
    info = server(fleet.sandbox, instance_id)
    assert info["addresses"] == [info["private_ip"], info["public_ip"]] and len(info["known_hosts"]) == 2
    public = {**info, "private_ip": info["public_ip"]}
    with connect(public, fleet.pkey) as ssh:
        assert run(ssh, "echo via-public")[1] == "via-public\n"


def test_a_windows_server_keeps_drive_c_on_its_disk(fleet: Fleet) -> None:
    password = "Sandbox-Pass-2024"
    params = {"LoginSettings": {"Password": password}}
    ids = call(fleet.cvm, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": WINDOWS_IMAGE, **params})
    (instance_id,) = ids.InstanceIdSet
    wait_state(fleet.cvm, [instance_id], "RUNNING")
    info = server(fleet.sandbox, instance_id)
    assert info["login_user"] == "Administrator"
    assert (Path(info["disk"]) / "C:" / "qcloud").is_dir()
    # The cloud keeps a salted hash, never the password, and shows neither in its state.
    state = json.dumps(fleet.sandbox.admin("GET", "state"))
    assert password not in state and "password" not in state.lower()
    stored = fleet.sandbox.cloud.backends["cvm"].state.instances[instance_id].password_hash
    assert stored and password not in stored and stored.startswith("pbkdf2_sha256$")

    def login(secret: str, user: str = "Administrator") -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        entry = paramiko.hostkeys.HostKeyEntry.from_line(info["known_hosts"][0])
        assert entry is not None
        client.get_host_keys().add(entry.hostnames[0], entry.key.get_name(), entry.key)
        sock = nodelay_socket(info["private_ip"], info["ssh_port"])
        client.connect(
            info["private_ip"], info["ssh_port"], user, secret, sock=sock, look_for_keys=False, allow_agent=False
        )
        return client

    for wrong_password, user in (("Sandbox-Pass-2025", "Administrator"), (password, "root")):
        with pytest.raises(paramiko.AuthenticationException):
            login(wrong_password, user)
    client = login(password)
    with client, client.open_sftp() as sftp:
        with sftp.open("/C:/qcloud/sdk.config", "w") as file:
            file.write(b'{"authServerUrl": "http://127.0.0.1/mina_auth/"}')
        assert "mina_auth" in run(client, "cat /C:/qcloud/sdk.config")[1]


def test_windows_passwords_follow_the_clouds_rules(fleet: Fleet) -> None:
    launch = {"Placement": {"Zone": ZONE}, "ImageId": WINDOWS_IMAGE}
    for weak in ("Short-1a", "alllowercaseletters", "/Starts-With-Slash1"):  # < 12, one class, leading /
        with pytest.raises(TencentCloudSDKException) as refused:
            call(fleet.cvm, "RunInstances", {**launch, "LoginSettings": {"Password": weak}})
        assert refused.value.code == "InvalidPassword" and weak not in str(refused.value.message)
    both = {"Password": "Ok-Pass-2024", "KeyIds": [fleet.key_id]}  # a Linux server takes one or the other
    with pytest.raises(TencentCloudSDKException) as refused:
        call(fleet.cvm, "RunInstances", {**launch, "ImageId": PUBLIC_IMAGE, "LoginSettings": both})
    assert refused.value.code == "InvalidParameterCombination"


def password_login(info: dict[str, Any], password: str) -> paramiko.SSHClient:
    client = strict_ssh_client(info["known_hosts"])
    sock = nodelay_socket(info["private_ip"], info["ssh_port"])
    client.connect(
        info["private_ip"],
        info["ssh_port"],
        "Administrator",
        password,
        sock=sock,
        look_for_keys=False,
        allow_agent=False,
    )
    return client


def test_a_windows_password_survives_a_restart_and_an_image_keeps_it(sandbox: Any, tmp_path: Path) -> None:
    """KeepImageLogin gives servers launched from a Windows image the source's password; hashes persist aside."""
    import os
    import stat

    from sandbox.core.emulated_cloud import SandboxConfig
    from sandbox.server import EmbeddedSandbox
    from tests.sdk import sdk_client

    password = "Keep-Image-Login-7"
    ports = {k: int(os.environ[v]) for k, v in (("ssh_port", "TCSCALE_TEST_SSH_PORT"),) if os.environ.get(v)}
    config = SandboxConfig(port=0, rate_limit=0, state_dir=tmp_path / "state", **ports)
    with EmbeddedSandbox(config) as first:
        cvm = sdk_client(first, cvm_client.CvmClient)
        launch = {"Placement": {"Zone": ZONE}, "ImageId": WINDOWS_IMAGE, "LoginSettings": {"Password": password}}
        (source,) = call(cvm, "RunInstances", launch).InstanceIdSet
        wait_state(cvm, [source], "RUNNING")
        image_id = call(cvm, "CreateImage", {"InstanceId": source, "ImageName": "windows-iis"}).ImageId
        poll(
            "image NORMAL",
            lambda: call(cvm, "DescribeImages", {"ImageIds": [image_id]}).ImageSet[0].ImageState == "NORMAL",
        )
    saved = tmp_path / "state" / "cvm-logins.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and password not in saved.read_text()
    assert "pbkdf2_sha256" not in (tmp_path / "state" / "state.json").read_text()
    with EmbeddedSandbox(config) as second:
        cvm = sdk_client(second, cvm_client.CvmClient)
        keep = {"Placement": {"Zone": ZONE}, "ImageId": image_id, "LoginSettings": {"KeepImageLogin": "TRUE"}}
        (clone,) = call(cvm, "RunInstances", keep).InstanceIdSet
        wait_state(cvm, [clone], "RUNNING")
        for instance_id in (source, clone):
            with password_login(server(second, instance_id), password) as ssh:
                assert run(ssh, "echo in")[1] == "in\n"


# ---- images and disks ---------------------------------------------------------------------------
def test_an_image_is_the_disk_at_create_time_and_servers_from_it_get_copies(fleet: Fleet) -> None:
    (source,) = fleet.launch()
    with fleet.ssh(source) as ssh:
        run(ssh, "echo v1 > /data/version")
        image_id = call(fleet.cvm, "CreateImage", {"InstanceId": source, "ImageName": "snap"}).ImageId
        run(ssh, "echo v2 > /data/version && touch /data/after-image")  # after CreateImage: not in the image
    poll(
        "image NORMAL",
        lambda: call(fleet.cvm, "DescribeImages", {"ImageIds": [image_id]}).ImageSet[0].ImageState == "NORMAL",
    )
    first, second = fleet.launch(image_id, count=2)
    with fleet.ssh(first) as ssh:
        assert run(ssh, "cat /data/version")[1] == "v1\n"
        assert run(ssh, "test -e /data/after-image")[0] == 1
        run(ssh, "echo v3 > /data/version")
    with fleet.ssh(second) as ssh:
        assert run(ssh, "cat /data/version")[1] == "v1\n"  # a sibling's change stays on the sibling's disk
    with fleet.ssh(source) as ssh:
        assert run(ssh, "cat /data/version")[1] == "v2\n"


# ---- power ------------------------------------------------------------------------------------------
def test_stopped_and_terminated_servers_stop_answering(fleet: Fleet) -> None:
    (instance_id,) = fleet.launch()
    info = server(fleet.sandbox, instance_id)
    with fleet.ssh(instance_id) as ssh:
        run(ssh, "echo kept > /data/kept")
    call(fleet.cvm, "StopInstances", {"InstanceIds": [instance_id]})
    wait_state(fleet.cvm, [instance_id], "STOPPED")
    poll("SSH refused while stopped", lambda: refused(info))
    call(fleet.cvm, "StartInstances", {"InstanceIds": [instance_id]})
    wait_state(fleet.cvm, [instance_id], "RUNNING")
    again = server(fleet.sandbox, instance_id)
    assert again["known_hosts"] == info["known_hosts"]  # same server, same host key
    with fleet.ssh(instance_id) as ssh:
        assert run(ssh, "cat /data/kept")[1] == "kept\n"
    call(fleet.cvm, "TerminateInstances", {"InstanceIds": [instance_id]})
    poll("SSH refused once terminated", lambda: refused(info))
    poll("disk removed", lambda: not Path(info["disk"]).exists())


def test_servers_come_back_with_their_disks_and_host_keys_after_a_sandbox_restart(sandbox: Any, tmp_path: Path) -> None:
    from sandbox.core.emulated_cloud import SandboxConfig
    from sandbox.server import EmbeddedSandbox
    from tests.sdk import sdk_client

    config = SandboxConfig(port=0, rate_limit=0, state_dir=tmp_path / "state")
    with EmbeddedSandbox(config) as first:
        fleet = Fleet(first, sdk_client(first, cvm_client.CvmClient))
        (instance_id,) = fleet.launch()
        before = server(first, instance_id)
        with fleet.ssh(instance_id) as ssh:
            run(ssh, "echo persisted > /data/p")
    with EmbeddedSandbox(config) as second:
        after = server(second, instance_id)
        assert after["known_hosts"] == before["known_hosts"]
        with connect(after, fleet.pkey) as ssh:
            assert run(ssh, "cat /data/p")[1] == "persisted\n"


# ---- the exec fallback (kernels without user namespaces) ------------------------------------------
@pytest.fixture
def fallback_guest(tmp_path: Path) -> Iterator[tuple[Shell, Guest]]:
    disks = Disks(tmp_path / "plane")
    disk = disks.clone(PUBLIC_IMAGE, "ins-fallback", "CentOS")
    calls: list[tuple[list[str], str]] = []

    async def control(argv: list[str], cwd: str) -> tuple[int, str]:
        calls.append((argv, cwd))
        return 0, f"handled {' '.join(argv)}\n"

    guest = Guest("ins-fallback", disk, "CentOS", "127.0.0.1", "VM-0-1-centos", control)
    yield Shell(tmp_path / "plane", mode="interpreter"), guest


def test_the_fallback_interpreter_runs_the_commands_guests_need(fallback_guest: tuple[Shell, Guest]) -> None:
    import asyncio

    shell, guest = fallback_guest

    def sh(command: str) -> tuple[int, str]:
        result = asyncio.run(shell.run(guest, command))
        return result.exit_status, result.stdout.decode()

    assert sh("echo x > /data/f && cat /data/f") == (0, "x\n")
    assert sh("test -f /data/f && echo yes") == (0, "yes\n")
    assert sh("test -f /data/nope")[0] == 1
    assert sh("cp /data/f /data/g && mv /data/g /tmp/h && sed -i 's/x/y/g' /tmp/h && cat /tmp/h") == (0, "y\n")
    assert sh("cd /data/release/app || mkdir -p /data/release/app && cd /data/release/app && pwd")[1].endswith(
        "/data/release/app\n"
    )
    assert sh("cat ../../../../etc/hostname")[0] == 1  # no /etc/hostname in a fresh base: never the host's
    assert sh("cd /tmp && pm2 start process.json") == (0, "handled pm2 start process.json\n")
    assert sh("nosuchcommand")[0] == 127


def test_fifteen_ssh_connections_in_a_row_each_authenticate_and_exec(fleet: Fleet) -> None:
    """Each connection a full handshake and public-key auth. How fast is `bench.dataplane`'s question (a timed
    assertion here failed whenever the machine was busy)."""
    (instance_id,) = fleet.launch()
    info = server(fleet.sandbox, instance_id)
    for _ in range(15):
        with connect(info, fleet.pkey) as ssh:
            assert run(ssh, "true")[0] == 0


def test_the_fallback_curl_answers_like_curl(fallback_guest: tuple[Shell, Guest]) -> None:
    """From the server's address, to the port the sandbox serves the real port at, with curl's exit codes."""
    import asyncio
    import http.server
    import json as jsonlib
    import socket as socketlib
    import threading

    shell, guest = fallback_guest

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = jsonlib.dumps({"type": self.headers["Content-Type"], "body": body.decode()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socketlib.create_server(("127.0.0.1", 0))  # accepts (backlog) and never answers
    guest.port_map = {80: server.server_address[1]}

    def sh(command: str) -> tuple[int, str, str]:
        result = asyncio.run(shell.run(guest, command))
        return result.exit_status, result.stdout.decode(), result.stderr.decode()

    try:
        body = '{"version":1}'
        code, out, _ = sh(f"curl -sS -m 5 -X POST -H 'Content-Type: application/json' -d '{body}' http://127.0.0.1/")
        assert code == 0 and jsonlib.loads(out) == {"type": "application/json", "body": body}
        refused = socketlib.socket()
        refused.bind(("127.0.0.1", 0))
        port = refused.getsockname()[1]
        refused.close()
        code, out, err = sh(f"curl -sS -m 5 http://127.0.0.1:{port}/")
        assert (code, out) == (7, "") and err.startswith("curl: (7) Failed to connect")
        code, _, err = sh(f"curl -sS -m 1 http://127.0.0.1:{silent.getsockname()[1]}/")
        assert code == 28 and "curl: (28)" in err
        assert sh(f"curl -s -m 5 http://127.0.0.1:{port}/") == (7, "", "")  # -s alone: quiet
        from tasks.apps import reach_command
        from tasks.health import AUTH_PROBE
        from tasks.models import runtime_profile

        code, out, _ = sh(reach_command(runtime_profile("node-pm2"), "http://127.0.0.1/mina_auth/", 5))
        assert code == 0 and jsonlib.loads(jsonlib.loads(out)["body"]) == AUTH_PROBE  # tcscale's quoting survives
    finally:
        server.shutdown()
        silent.close()
