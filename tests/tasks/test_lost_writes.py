"""A write whose answer was lost may still land later: how long, for a process that undoes this one's writes."""

from __future__ import annotations

import pytest

from tasks.cloud import CloudError
from tasks.lost_writes import landing_deadline, write_outlasting


def test_the_landing_deadline_covers_a_write_whose_answer_was_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancelled run hands its undo to a cleanup-run that starts no sooner than this (its `outlast` cannot)."""
    monkeypatch.setenv("TCSCALE_REQUEST_TIMEOUT", "2")  # a lost write may land within 4 s of being sent

    def lost() -> None:
        raise CloudError("ServerNetworkError", "502 from the gateway")

    before = landing_deadline()  # another test's lost write may outlast this one
    with pytest.raises(CloudError):
        write_outlasting(("desired", "ap-guangzhou", "asg-test-landing"), 3, lost)
    assert 3.0 < landing_deadline() <= max(before, 4.0)
