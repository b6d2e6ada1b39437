"""Load balancers that really forward TCP: real SDK, real TCP/HTTP through VIP:port, the guide's session servers.

Setup (as the guide): seed, image the session server, run 2 more from the image (their auth service
starts by itself), an internal CLB with a TCP listener (listener port = backend port = 80, mina_auth's
real port; this host reaches VIP:80 at the port the sandbox serves 80 at, `ports.map`). The session
servers' security group admits 80 only from the business server, so the VIP is refused until a rule admits it.
"""

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tencentcloud.clb.v20180317.clb_client import ClbClient
from tencentcloud.cvm.v20170312.cvm_client import CvmClient
from tencentcloud.vpc.v20170312.vpc_client import VpcClient

from tests.conftest import ClientFactory

# A well-formed session check (the MA protocol): any MA answer proves the auth service answered.
MA_CHECK = {
    "version": 1,
    "componentName": "MA",
    "interface": {"interfaceName": "qcloud.cam.auth", "para": {"id": "nobody", "skey": "nothing"}},
}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def call(client: Any, action: str, params: dict[str, Any]) -> dict[str, Any]:
    return client.call_json(action, params)["Response"]


def wait_task(clb: Any, request_id: str) -> None:
    wait_for(lambda: call(clb, "DescribeTaskStatus", {"TaskId": request_id})["Status"] == 0, "the CLB task")


class Guide:
    """The seeded session tier, made a 3-server cluster behind an internal CLB's TCP listener."""

    def __init__(self, sandbox: Any, client: ClientFactory) -> None:
        self.sandbox = sandbox
        self.cvm, self.clb, self.vpc = client(CvmClient), client(ClbClient), client(VpcClient)
        sandbox.admin("POST", "servers/settle")  # the previous test's servers have let go of their addresses
        # The seed's own VPC: it claims a /16 no other sandbox on this host holds (a named one would not be claimed).
        seeded = httpx.post(f"{sandbox.url}/_sandbox/seed", json={}, timeout=60)
        assert seeded.status_code == 200, seeded.text  # say why the seed failed
        self.seed: dict[str, Any] = seeded.json()
        self.app_port: int = self.seed["ports"]["session"]  # 80, as in the cloud
        self.http: int = self.seed["ports"]["map"][str(self.app_port)]  # where this host reaches it
        self.session_group: str = self.seed["security_groups"]["session"]
        self.servers: list[str] = [self.seed["session_server"]["instance_id"], *self._clone_session_server(2)]
        self.wait_auth_services_up(self.servers)

    def _clone_session_server(self, count: int) -> list[str]:
        source = self.seed["session_server"]["instance_id"]
        image_id = call(self.cvm, "CreateImage", {"InstanceId": source, "ImageName": "session-tier"})["ImageId"]
        wait_for(
            lambda: call(self.cvm, "DescribeImages", {"ImageIds": [image_id]})["ImageSet"][0]["ImageState"] == "NORMAL",
            "the session image",
        )
        launched = call(
            self.cvm,
            "RunInstances",
            {
                "Placement": {"Zone": self.seed["zone"], "ProjectId": self.seed["project_id"]},
                "ImageId": image_id,
                "InstanceCount": count,
                "VirtualPrivateCloud": {
                    "VpcId": self.seed["vpc"]["vpc_id"],
                    "SubnetId": self.seed["subnet"]["subnet_id"],
                },
                "SecurityGroupIds": [self.session_group],
                "LoginSettings": {"KeyIds": [self.seed["key_pair"]["key_id"]]},
            },
        )
        return launched["InstanceIdSet"]

    def guests(self) -> dict[str, Any]:
        return {s["instance_id"]: s for s in self.sandbox.admin("GET", "guests")["servers"]}

    def wait_auth_services_up(self, instance_ids: list[str]) -> None:
        def up() -> bool:
            guests = self.guests()
            return all(
                guests.get(i, {}).get("apps", {}).get("mina_auth", {}).get("state") == "online" for i in instance_ids
            )

        wait_for(up, "the auth services of the session servers")

    def auth_checks(self) -> dict[str, int]:
        """How many MA requests each session server's auth service has answered (its own count)."""
        return {
            i: s["apps"]["mina_auth"]["loaded"].get("checks", 0) for i, s in self.guests().items() if i in self.servers
        }

    def create_listener(self, health_check: dict[str, Any] | None = None, port: int | None = None) -> None:
        self.port = port or self.app_port  # listener port = backend port, as the guide sets it
        created = call(
            self.clb,
            "CreateLoadBalancer",
            {
                "LoadBalancerType": "INTERNAL",
                "VpcId": self.seed["vpc"]["vpc_id"],
                "SubnetId": self.seed["subnet"]["subnet_id"],
                "ProjectId": self.seed["project_id"],
                "LoadBalancerName": "session-clb",
            },
        )
        self.lb_id = created["LoadBalancerIds"][0]
        wait_for(
            lambda: (
                call(self.clb, "DescribeLoadBalancers", {"LoadBalancerIds": [self.lb_id]})["LoadBalancerSet"][0][
                    "Status"
                ]
                == 1
            ),
            "the CLB",
        )
        lb = call(self.clb, "DescribeLoadBalancers", {"LoadBalancerIds": [self.lb_id]})["LoadBalancerSet"][0]
        self.vip: str = lb["LoadBalancerVips"][0]
        params: dict[str, Any] = {"LoadBalancerId": self.lb_id, "Ports": [self.port], "Protocol": "TCP"}
        params["HealthCheck"] = health_check or {"HealthSwitch": 1, "TimeOut": 2, "IntervalTime": 5}
        listener = call(self.clb, "CreateListener", params)
        wait_task(self.clb, listener["RequestId"])
        self.listener_id: str = listener["ListenerIds"][0]

    def register(self, weights: dict[str, int]) -> None:
        targets = [{"InstanceId": i, "Port": self.port, "Weight": w} for i, w in weights.items()]
        params = {"LoadBalancerId": self.lb_id, "ListenerId": self.listener_id, "Targets": targets}
        wait_task(self.clb, call(self.clb, "RegisterTargets", params)["RequestId"])

    def admit_vip(self) -> None:
        rule = {"Protocol": "TCP", "Port": str(self.port), "CidrBlock": self.vip, "Action": "ACCEPT"}
        call(
            self.vpc,
            "CreateSecurityGroupPolicies",
            {"SecurityGroupId": self.session_group, "SecurityGroupPolicySet": {"Ingress": [rule]}},
        )

    def target_health(self) -> dict[str, bool]:
        answer = call(self.clb, "DescribeTargetHealth", {"LoadBalancerIds": [self.lb_id]})
        return {
            target["TargetId"]: target["HealthStatus"]
            for lb in answer["LoadBalancers"]
            for listener in lb["Listeners"]
            for rule in listener["Rules"]
            for target in rule["Targets"]
        }

    def ask_through_vip(self) -> httpx.Response:
        """One MA request on a new connection (so the balancer schedules each one)."""
        return httpx.post(f"http://{self.vip}:{self.http}/mina_auth/", json=MA_CHECK, timeout=5)


def answers(guide: Guide) -> bool:
    try:
        response = guide.ask_through_vip()
    except httpx.TransportError:
        return False
    return response.status_code == 200 and isinstance(response.json().get("returnCode"), int)


@pytest.fixture
def guide(sandbox: Any, client: ClientFactory) -> Guide:
    return Guide(sandbox, client)


def test_vip_answers_from_every_server_round_robin_only_once_admitted(guide: Guide) -> None:
    guide.create_listener()
    guide.register({i: 10 for i in guide.servers})

    # The session group admits app_port only from the business server: the VIP's checks and traffic fail.
    wait_for(lambda: guide.target_health() and not any(guide.target_health().values()), "health checks refused")
    assert all(h is False for h in guide.target_health().values())
    for _ in range(3):
        with pytest.raises(httpx.TransportError):
            guide.ask_through_vip()

    guide.admit_vip()
    wait_for(lambda: all(guide.target_health().values()), "every target healthy once the VIP is admitted")
    before = guide.auth_checks()
    for _ in range(6):
        response = guide.ask_through_vip()
        assert response.status_code == 200
        assert isinstance(response.json()["returnCode"], int)  # a well-formed MA answer
    served = {i: n - before[i] for i, n in guide.auth_checks().items()}
    assert served == {i: 2 for i in guide.servers}, served  # round robin: every server twice, by its own count


def test_weight_zero_gets_no_new_connections(guide: Guide) -> None:
    guide.create_listener()
    idle, *busy = guide.servers
    guide.register({idle: 0, **{i: 10 for i in busy}})
    guide.admit_vip()
    wait_for(lambda: answers(guide), "the VIP to answer")
    before = guide.auth_checks()
    for _ in range(6):
        assert guide.ask_through_vip().status_code == 200
    served = {i: n - before[i] for i, n in guide.auth_checks().items()}
    assert served[idle] == 0
    assert sum(served.values()) == 6 and all(served[i] >= 1 for i in busy), served


def test_stopped_server_turns_unhealthy_and_terminated_one_drops_out(guide: Guide) -> None:
    guide.create_listener()
    guide.register({i: 10 for i in guide.servers})
    guide.admit_vip()
    wait_for(lambda: all(guide.target_health().values()), "every target healthy")
    stopped, terminated, survivor = guide.servers

    call(guide.cvm, "StopInstances", {"InstanceIds": [stopped]})
    wait_for(lambda: guide.target_health().get(stopped) is False, "the stopped server to turn unhealthy")
    call(guide.cvm, "TerminateInstances", {"InstanceIds": [terminated]})
    wait_for(lambda: terminated not in guide.target_health(), "the terminated server to leave target health")
    assert guide.target_health() == {stopped: False, survivor: True}

    before = guide.auth_checks()
    for _ in range(4):  # only the healthy survivor gets traffic now
        assert guide.ask_through_vip().status_code == 200
    assert guide.auth_checks()[survivor] - before[survivor] == 4


def test_http_health_check_follows_the_auth_service(guide: Guide) -> None:
    check = {"HealthSwitch": 1, "CheckType": "HTTP", "HttpCheckPath": "/mina_auth/", "HttpCode": 2}
    check |= {"HttpCheckDomain": "session.internal", "HttpCheckMethod": "GET"}
    guide.create_listener(check)  # HttpCode 2: only 2xx is healthy
    guide.register({i: 10 for i in guide.servers})
    guide.admit_vip()
    wait_for(lambda: all(guide.target_health().values()), "every target healthy over HTTP")


def listening(address: str, port: int) -> bool:
    """Does anything listen on address:port? (A listener with no backend accepts, then resets.)"""
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except ConnectionRefusedError:
        return False
    except ConnectionResetError:  # accepted, then reset before connect() looked: it listens
        return True


def test_vip_stops_listening_when_listener_then_balancer_are_deleted(guide: Guide) -> None:
    guide.create_listener()
    assert listening(guide.vip, guide.http)
    listeners = guide.sandbox.admin("GET", "balancers")
    assert [(b["address"], b["served_at"], b["listening"]) for b in listeners] == [
        (f"{guide.vip}:{guide.app_port}", f"{guide.vip}:{guide.http}", True)
    ]

    deleted = call(guide.clb, "DeleteListener", {"LoadBalancerId": guide.lb_id, "ListenerId": guide.listener_id})
    wait_task(guide.clb, deleted["RequestId"])
    wait_for(lambda: not listening(guide.vip, guide.http), "VIP:port to stop listening")

    # A second listener, then the whole load balancer goes.
    listener = call(guide.clb, "CreateListener", {"LoadBalancerId": guide.lb_id, "Ports": [7001], "Protocol": "TCP"})
    wait_task(guide.clb, listener["RequestId"])
    wait_for(lambda: listening(guide.vip, 7001), "the new listener to listen")
    deleted = call(guide.clb, "DeleteLoadBalancer", {"LoadBalancerIds": [guide.lb_id]})
    wait_task(guide.clb, deleted["RequestId"])
    wait_for(lambda: not listening(guide.vip, 7001), "the deleted balancer's VIP to stop listening")
    assert guide.sandbox.admin("GET", "balancers") == []


def serve_echo(address: str, port: int) -> socket.socket:
    """A TCP echo service on a server's address: echoes until the peer half-closes, then closes."""
    listener = socket.create_server((address, port))

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(ConnectionResetError):  # TCP health checks end with a reset
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed by the test
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener


def test_relay_carries_bulk_data_both_ways_with_half_close(guide: Guide) -> None:
    backend = guide.seed["session_server"]
    echo = serve_echo(backend["private_ip"], 0)  # a free port on the server's address
    port = echo.getsockname()[1]
    try:
        guide.create_listener(port=port)
        guide.register({backend["instance_id"]: 10})
        guide.admit_vip()
        wait_for(lambda: guide.target_health().get(backend["instance_id"]), "the echo target healthy")
        payload = os.urandom(8 * 1024 * 1024)
        with socket.create_connection((guide.vip, port), timeout=10) as sock:
            sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
            sender.start()  # send and read at once: the echo fills both directions' buffers
            received = bytearray()
            while chunk := sock.recv(1 << 20):
                received += chunk
            sender.join()
        assert len(received) == len(payload)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    finally:
        echo.close()
