"""The bridge's settings (issue 14 defect 6(d)): the message-id memory must outlive the window in which a signed
request is accepted, or a replay arriving after the id is forgotten would run again."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import ValidationError

from chatops.app import serve
from chatops.settings import ChatopsConfigError, ChatopsSettings


@pytest.mark.parametrize(("window", "ttl"), [(3600, 900), (600, 600), (600, 1200)])
def test_a_message_ttl_not_beyond_the_acceptance_window_is_refused(
    monkeypatch: pytest.MonkeyPatch, window: int, ttl: int
) -> None:
    # a request stamped `window` s ahead is accepted until 2 x window after it first arrives: ttl must exceed that
    monkeypatch.setenv("TCSCALE_CHATOPS_TIMESTAMP_WINDOW", str(window))
    monkeypatch.setenv("TCSCALE_CHATOPS_MESSAGE_TTL", str(ttl))
    with pytest.raises(ValidationError, match=r"(?s)TCSCALE_CHATOPS_MESSAGE_TTL.*TCSCALE_CHATOPS_TIMESTAMP_WINDOW"):
        ChatopsSettings()
    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(ChatopsConfigError) as refused:
        serve()  # `tcscale chatops`: refuses before anything starts, naming both settings
    assert "MESSAGE_TTL" in str(refused.value) and "TIMESTAMP_WINDOW" in str(refused.value)


def test_a_message_ttl_beyond_twice_the_window_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCSCALE_CHATOPS_TIMESTAMP_WINDOW", "3600")
    monkeypatch.setenv("TCSCALE_CHATOPS_MESSAGE_TTL", "7201")
    assert ChatopsSettings().message_ttl == 7201
    assert ChatopsSettings(timestamp_window=300, message_ttl=601).message_ttl == 601  # the defaults' neighbourhood
