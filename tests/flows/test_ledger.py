"""The undo ledger's answers: undone, nothing to undo, left (changed since by someone else), FAILED with its fix."""

from __future__ import annotations

from flows.shared.ledger import Ledger, Left


def test_each_undo_answer_becomes_its_outcome_newest_first() -> None:
    ledger = Ledger()
    ledger.add("image", lambda: True, "delete the image")
    ledger.add("rule", lambda: False, "delete the rule")
    ledger.add("desired capacity of asg-1 2 -> 3", lambda: Left(detail="asg-1 desires 5, set since"), "set it to 2")
    ledger.add("listener", lambda: 1 / 0, "delete the listener")
    undone = ledger.undo_all()
    assert [(u.what, u.outcome) for u in undone] == [
        ("listener", "FAILED"),
        ("desired capacity of asg-1 2 -> 3", "left"),
        ("rule", "nothing to undo"),
        ("image", "undone"),
    ]
    assert undone[1].detail == "asg-1 desires 5, set since" and undone[1].fix == "set it to 2"
    assert undone[0].fix == "delete the listener" and "division by zero" in undone[0].detail
