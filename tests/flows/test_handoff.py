"""The session VIP handed from the session tier to the business tier that scale-out-cluster runs beside it."""

import threading

import pytest

from flows.shared import handoff


def test_the_business_tier_gets_the_url_once_published_and_only_within_the_cluster_run():
    assert handoff.partner("run-a") is None  # a tier run on its own waits for nobody
    handoff.publish("run-a", "http://10.0.0.9/mina_auth/")  # and publishing to nobody is a no-op
    with handoff.session_url("run-a"):
        session = handoff.partner("run-a")
        assert session is not None and handoff.partner("run-b") is None
        got: list[str] = []
        waiter = threading.Thread(target=lambda: got.append(session.wait(10)))
        waiter.start()
        handoff.publish("run-a", "http://10.0.0.9/mina_auth/")
        waiter.join(10)
        assert got == ["http://10.0.0.9/mina_auth/"]
    assert handoff.partner("run-a") is None


def test_a_failed_session_tier_or_the_end_of_the_run_stops_the_wait_with_the_reason():
    with pytest.raises(RuntimeError), handoff.session_url("run-c") as session:
        session.fail(RuntimeError("preflight failed: quota"))
        with pytest.raises(handoff.SessionTierFailed, match="run-c failed: RuntimeError: preflight failed: quota"):
            session.wait(10)
        raise RuntimeError("the session tier failed")
    with handoff.session_url("run-d") as ended:
        pass
    with pytest.raises(handoff.SessionTierFailed, match="the cluster run ended"):
        ended.wait(10)
    with handoff.session_url("run-e") as slow, pytest.raises(handoff.SessionTierFailed, match=r"no VIP within 0\.05s"):
        slow.wait(0.05)
