"""The rehearsal's verdicts on what it read back (the rehearsal itself is slow: tests/devstack/test_rehearsal.py)."""

from datetime import UTC, datetime, timedelta

from devstack.rehearsal_checks import Command, RunFacts, check, check_leases

T0 = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _change(name: str, worker: str, start: float, end: float, state: str = "COMPLETED", message: str = "") -> RunFacts:
    command = Command("scale session 1", "session", changes=True, run_id=name)
    return RunFacts(command, name, state, message, _at(start), _at(end), worker)


def test_a_completed_change_without_lock_events_needs_a_lease_of_its_tier_inside_its_run() -> None:
    facts = [_change("first", "worker-a", 0, 20), _change("second", "worker-b", 21, 40)]
    facts[0].locks = [(_at(1), _at(19))]  # the second one's events were lost
    commands = [f.command for f in facts]
    inside = {"session": [(_at(1), _at(19)), (_at(22), _at(39))]}
    assert check(facts, commands, ("worker-a", "worker-b"), inside) == []
    elsewhere = {"session": [(_at(1), _at(19))]}
    assert check(facts, commands, ("worker-a", "worker-b"), elsewhere) == [
        "second ('scale session 1') completed without a hold of its tier's lock"
    ]


def test_a_failed_change_passes_only_when_its_undo_finished() -> None:
    undone = _change("undone", "worker-a", 0, 5, "FAILED", "Flow run encountered an exception: SSHError")
    stuck = _change("stuck", "worker-b", 6, 9, "FAILED", "SSHError\nundo incomplete, fix by hand:\n- a CLB")
    done = _change("done", "worker-b", 10, 20)
    done.locks = [(_at(11), _at(19))]
    facts = [undone, stuck, done]
    failures = check(facts, [f.command for f in facts], ("worker-a", "worker-b"), {"session": []})
    assert len(failures) == 1 and failures[0].startswith("command 2 ('scale session 1'): run stuck ended FAILED")


def test_leases_of_one_tier_at_once_or_left_at_the_end_fail_and_too_few_leases_mean_a_blind_watch() -> None:
    held = _change("held", "worker-a", 0, 20)
    held.locks = [(_at(1), _at(19))]
    one = {"session": [(_at(1), _at(19))]}
    assert check_leases(one, set(), set(), [held]) == []
    assert check_leases(one, {"session"}, {"session"}, [held]) == [
        "the session tier was held by two leases at once (Redis)",
        "the session tier is still leased at the end (Redis)",
    ]
    assert check_leases({"session": []}, set(), set(), [held]) == [
        "session tier: 1 holds in the runs' events but 0 in Redis"
    ]
