"""The /_sandbox/ admin API and persistence across restarts."""

import threading

import httpx
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import cvm_client, models

from sandbox.core.emulated_cloud import SandboxConfig
from sandbox.server import EmbeddedSandbox
from tests.sdk import poll, sdk_client


def create_key(cvm: cvm_client.CvmClient, name: str) -> str:
    request = models.CreateKeyPairRequest()
    request.KeyName, request.ProjectId = name, 0
    return cvm.CreateKeyPair(request).KeyPair.KeyId


def test_health_and_state(client, sandbox):
    assert sandbox.admin("GET", "health")["status"] == "ok"
    key_id = create_key(client(cvm_client.CvmClient), "stateful")
    state = sandbox.admin("GET", "state")
    assert key_id in state["services"]["cvm"]["key_pairs"]
    # The state never carries a private key: the cloud does not keep it.
    assert "PRIVATE KEY" not in httpx.get(f"{sandbox.url}/_sandbox/state").text


def test_reset_empties_everything(client, sandbox):
    create_key(client(cvm_client.CvmClient), "gone")
    sandbox.admin("POST", "faults", {"action": "DescribeZones", "error_code": "InternalError"})
    sandbox.admin("POST", "reset")
    assert sandbox.admin("GET", "state")["services"]["cvm"]["key_pairs"] == {}
    assert sandbox.admin("GET", "faults") == []


def test_clock_profile_and_advance(sandbox):
    before = sandbox.admin("GET", "clock")
    after = sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.5, "advance": 3600})
    assert after["profile"] == "realistic" and after["time_scale"] == 0.5
    assert after["offset"] - before["offset"] == 3600
    bad = httpx.post(f"{sandbox.url}/_sandbox/clock", json={"profile": "warp"})
    assert bad.status_code == 400


def test_bad_fault_rule_is_refused(sandbox):
    response = httpx.post(f"{sandbox.url}/_sandbox/faults", json={"probability": 3})
    assert response.status_code == 400 and "probability" in response.json()["error"]


@pytest.mark.sandbox  # its own embedded sandboxes
def test_state_persists_across_restart(tmp_path):
    config = SandboxConfig(port=0, state_dir=tmp_path, dataplane=False)
    with EmbeddedSandbox(config) as first:
        cvm = sdk_client(first, cvm_client.CvmClient)
        key_id = create_key(cvm, "durable")
    assert (tmp_path / "state.json").exists()
    with EmbeddedSandbox(SandboxConfig(port=0, state_dir=tmp_path, dataplane=False)) as second:
        cvm = sdk_client(second, cvm_client.CvmClient)
        request = models.DescribeKeyPairsRequest()
        request.KeyIds = [key_id]
        assert cvm.DescribeKeyPairs(request).KeyPairSet[0].KeyName == "durable"


def test_stats_count_requests_per_action_since_reset(client, sandbox):
    sandbox.admin("POST", "stats/reset")
    cvm = client(cvm_client.CvmClient)
    create_key(cvm, "counted")
    for _ in range(3):
        cvm.DescribeKeyPairs(models.DescribeKeyPairsRequest())
    sandbox.admin("POST", "faults", {"action": "DescribeZones", "error_code": "InternalError", "count": 1})
    with pytest.raises(TencentCloudSDKException, match="InternalError"):
        cvm.DescribeZones(models.DescribeZonesRequest())
    stats = sandbox.admin("GET", "stats")
    assert stats["requests"]["cvm"] == {"CreateKeyPair": 1, "DescribeKeyPairs": 3, "DescribeZones": 1}
    assert stats["total"] == 5 and stats["errors"] == {"InternalError": 1}
    assert sandbox.admin("POST", "stats/reset") == {"reset": True}
    assert sandbox.admin("GET", "stats")["total"] == 0


def test_stats_list_the_changing_requests_in_order_and_a_rule_fires_after_the_first_matches(client, sandbox):
    """What the crash matrix stops a run with: the order of a run's changes, and a rule on the n-th of an action."""
    sandbox.admin("POST", "stats/reset")
    cvm = client(cvm_client.CvmClient)
    sandbox.admin("POST", "faults", {"action": "CreateKeyPair", "error_code": "InternalError", "skip": 2, "count": 1})
    create_key(cvm, "first")
    cvm.DescribeKeyPairs(models.DescribeKeyPairsRequest())
    create_key(cvm, "second")
    with pytest.raises(TencentCloudSDKException, match="InternalError"):
        create_key(cvm, "third")
    create_key(cvm, "fourth")
    (rule,) = sandbox.admin("GET", "faults")
    assert rule["fired"] == 1 and rule["seen"] == 4
    assert sandbox.admin("GET", "stats")["changes"] == ["cvm.CreateKeyPair"] * 4


def test_a_lost_answer_with_latency_is_late_after_the_change_is_made(client, sandbox):
    """A process can be stopped right after one of its changes went through, before it hears of it."""
    cvm = client(cvm_client.CvmClient)
    sandbox.admin("POST", "faults", {"action": "CreateKeyPair", "lose_answer": True, "latency_ms": 3000, "count": 1})
    failed: list[Exception] = []

    def create() -> None:
        try:
            create_key(cvm, "late")
        except Exception as error:
            failed.append(error)

    caller = threading.Thread(target=create)
    caller.start()
    poll(
        lambda: sandbox.admin("GET", "state")["services"]["cvm"]["key_pairs"],
        done=lambda keys: [k for k in keys.values() if k["key_name"] == "late"],
        what="the key pair made while its answer is held",
        timeout=10,
    )
    assert caller.is_alive(), "the answer came before the hold ended"
    caller.join(30)
    assert failed, "the answer was not lost"


def test_stats_count_the_requests_still_being_served(client, sandbox):
    """A request held by a latency rule is in flight until the sandbox has applied and answered it: what a test waits
    on to see where a write its client gave up on finally landed."""
    cvm = client(cvm_client.CvmClient)
    sandbox.admin("POST", "faults", {"action": "CreateKeyPair", "latency_ms": 1000, "count": 1})
    caller = threading.Thread(target=create_key, args=(cvm, "held"))
    caller.start()
    poll(lambda: sandbox.admin("GET", "stats")["in_flight"], done=lambda n: n == 1, what="the held request", timeout=10)
    caller.join(30)
    assert sandbox.admin("GET", "stats")["in_flight"] == 0


def test_an_api_outage_drops_every_connection_refuses_new_ones_and_keeps_the_cloud(client, sandbox):
    """The API endpoint restarting, as a real cloud's does: the request that meets it loses its connection (with
    `lose_answer`, after taking effect; without, before), new connections are refused for `outage_ms`, then the same
    port answers again with the same state (a real cloud loses no resource; the servers run on)."""
    cvm = client(cvm_client.CvmClient)
    create_key(cvm, "before")

    def names() -> set[str] | None:
        try:
            return {k.KeyName for k in cvm.DescribeKeyPairs(models.DescribeKeyPairsRequest()).KeyPairSet}
        except TencentCloudSDKException:
            return None  # still down

    for lost, name in ((True, "applied"), (False, "never-applied")):
        sandbox.admin("POST", "faults", {"action": "CreateKeyPair", "outage_ms": 500, "lose_answer": lost, "count": 1})
        with pytest.raises(TencentCloudSDKException) as dropped:
            create_key(cvm, name)
        assert dropped.value.code == "ClientNetworkError"
        with pytest.raises(TencentCloudSDKException, match=r"[Rr]efused"):
            cvm.DescribeKeyPairs(models.DescribeKeyPairsRequest())
        back = poll(names, what="the API answering again", timeout=10)
        assert "before" in back and (name in back) is lost
