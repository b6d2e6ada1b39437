"""The reusable waiter: backoff, deadline, fail-fast terminal states, transient errors, batched describes.

Pure tests run on a virtual clock (`sleep` moves it), so they are exact and instant; the last tests
wait on real servers and images in the sandbox through the real SDK.
"""

import pytest
from tencentcloud.cvm.v20170312 import cvm_client

from tasks.cloud import CloudError, call
from tasks.waiters import WaitFailed, WaitTimeout, wait_all, wait_until

ZONE, CENTOS = "ap-guangzhou-3", "img-l8og963d"


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


def test_polls_with_backoff_until_done(vt):
    states = iter(["CREATING"] * 6 + ["NORMAL"])
    seen = []
    result = wait_until(
        lambda: next(states),
        done=lambda s: s == "NORMAL",
        failed=lambda s: None,
        what="image img-1",
        timeout=60,
        first_delay=1,
        max_delay=4,
        on_progress=lambda state, elapsed: seen.append((state, elapsed)),
        clock=vt.clock,
        sleep=vt.sleep,
    )
    assert result == "NORMAL"
    assert vt.sleeps == [1, 1.5, 2.25, 3.375, 4, 4]
    assert seen[0] == ("CREATING", 0) and len(seen) == 6


def test_a_terminal_state_fails_fast_with_the_clouds_message(vt):
    states = iter([("CREATING", None), ("CREATEFAILED", "disk busy")])
    with pytest.raises(WaitFailed) as info:
        wait_until(
            lambda: next(states),
            done=lambda s: s[0] == "NORMAL",
            failed=lambda s: f"{s[0]}: {s[1]}" if s[0] == "CREATEFAILED" else None,
            what="image img-1",
            timeout=600,
            clock=vt.clock,
            sleep=vt.sleep,
        )
    assert str(info.value) == "image img-1 failed: CREATEFAILED: disk busy" and len(vt.sleeps) == 1


def test_the_deadline_says_what_was_seen_last_and_never_oversleeps(vt):
    with pytest.raises(WaitTimeout) as info:
        wait_until(
            lambda: "PENDING",
            done=lambda s: False,
            failed=lambda s: None,
            what="server ins-1 RUNNING",
            timeout=10,
            first_delay=3,
            max_delay=3,
            clock=vt.clock,
            sleep=vt.sleep,
        )
    assert info.value.last_state == "PENDING" and "timed out after 10s waiting for server ins-1 RUNNING" in str(
        info.value
    )
    assert vt.sleeps == [3, 3, 3, 1] and vt.now == 10


def test_transient_errors_are_polled_through_and_others_propagate(vt):
    answers = iter([CloudError("RequestLimitExceeded", "slow down"), ConnectionResetError(), "NORMAL"])

    def describe():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(describe, lambda s: s == "NORMAL", lambda s: None, "x", 60, clock=vt.clock, sleep=vt.sleep)
    with pytest.raises(CloudError, match="InternalError"):
        wait_until(
            lambda: (_ for _ in ()).throw(CloudError("InternalError", "boom")),
            lambda s: True,
            lambda s: None,
            "x",
            60,
            clock=vt.clock,
            sleep=vt.sleep,
        )


def test_batched_wait_describes_only_pending_ids_in_batches(vt):
    ids = [f"ins-{n:03}" for n in range(250)]
    ready_after = {item: n % 5 for n, item in enumerate(ids)}  # RUNNING from the poll round 0..4 on
    polls: list[list[str]] = []

    def describe_many(batch):
        polls.append(batch)
        poll_round = len(vt.sleeps)
        # ins-007 is invisible in the first round: a just-launched id can be (eventual consistency)
        visible = [i for i in batch if i != "ins-007" or poll_round]
        return {i: "RUNNING" if poll_round >= ready_after[i] else "PENDING" for i in visible}

    finished = wait_all(
        describe_many, ids, lambda s: s == "RUNNING", lambda s: None, "servers", 60, clock=vt.clock, sleep=vt.sleep
    )
    assert set(finished) == set(ids)
    # 250, 200, 150, 100, 50 pending: 3 + 2 + 2 + 1 + 1 requests, each of <= 100 ids, never a finished id
    assert [len(batch) for batch in polls] == [100, 100, 50, 100, 100, 100, 50, 100, 50]
    assert len(polls) <= len(ids) / 10


def test_batched_wait_fails_fast_naming_every_failed_id(vt):
    answer = {"ins-1": ("RUNNING", None), "ins-2": ("LAUNCH_FAILED", "no capacity"), "ins-3": ("PENDING", None)}
    with pytest.raises(WaitFailed) as info:
        wait_all(
            lambda batch: {i: answer[i] for i in batch},
            list(answer),
            done=lambda s: s[0] == "RUNNING",
            failed=lambda s: s[1] if s[0] == "LAUNCH_FAILED" else None,
            what="servers RUNNING",
            timeout=60,
            clock=vt.clock,
            sleep=vt.sleep,
        )
    assert info.value.failures == {"ins-2": "no capacity"} and set(info.value.finished) == {"ins-1"}
    assert str(info.value) == "servers RUNNING failed: ins-2: no capacity"


def test_batched_wait_without_fail_fast_and_its_timeout(vt):
    answer = {"a": "RUNNING", "b": "LAUNCH_FAILED", "c": "PENDING"}
    common = dict(done=lambda s: s == "RUNNING", what="servers", clock=vt.clock, sleep=vt.sleep)
    with pytest.raises(WaitTimeout) as info:
        wait_all(lambda b: {i: answer[i] for i in b}, list(answer), failed=lambda s: None, timeout=5, **common)
    assert info.value.last_state == {"b": "LAUNCH_FAILED", "c": "PENDING"} and set(info.value.finished) == {"a"}
    answer["c"] = "RUNNING"
    with pytest.raises(WaitFailed) as failed:
        wait_all(
            lambda b: {i: answer[i] for i in b},
            list(answer),
            failed=lambda s: "launch failed" if s == "LAUNCH_FAILED" else None,
            timeout=5,
            fail_fast=False,
            **common,
        )
    assert set(failed.value.finished) == {"a", "c"} and failed.value.failures == {"b": "launch failed"}


# ---- against the sandbox ---------------------------------------------------------------------------------
def describe_instances(cvm):
    def describe(batch):
        return {i.InstanceId: i for i in call(cvm, "DescribeInstances", {"InstanceIds": batch}).InstanceSet}

    return describe


def launch_failed(instance):
    return instance.LatestOperationErrorMsg or "LAUNCH_FAILED" if instance.InstanceState == "LAUNCH_FAILED" else None


def test_waits_on_real_servers_with_one_describe_per_poll(client, sandbox):
    sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.005})
    cvm = client(cvm_client.CvmClient)
    ids = call(cvm, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": CENTOS, "InstanceCount": 5}).InstanceIdSet
    requests = []
    describe = describe_instances(cvm)
    running = wait_all(
        lambda batch: requests.append(batch) or describe(batch),
        ids,
        done=lambda i: i.InstanceState == "RUNNING",
        failed=launch_failed,
        what="servers RUNNING",
        timeout=30,
        first_delay=0.02,
        max_delay=0.1,
    )
    assert set(running) == set(ids) and len(requests) <= len(ids)


def test_a_launch_failure_in_the_sandbox_fails_the_wait_with_its_message(client, sandbox):
    sandbox.admin("POST", "faults", {"service": "cvm", "action": "RunInstances", "async_failure": "no capacity"})
    cvm = client(cvm_client.CvmClient)
    ids = call(cvm, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": CENTOS, "InstanceCount": 2}).InstanceIdSet
    with pytest.raises(WaitFailed) as info:
        wait_all(
            describe_instances(cvm),
            ids,
            lambda i: i.InstanceState == "RUNNING",
            launch_failed,
            "servers",
            10,
            first_delay=0.01,
        )
    assert info.value.failures == dict.fromkeys(ids, "no capacity")
