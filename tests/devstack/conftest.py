"""The `tcscale up` stack of test_up.py and test_browser.py: one per test run (tests/devstack/up_support.py)."""

import pytest

from tests.devstack.up_support import UpProcess, shared_up


@pytest.fixture
def up_stack(request: pytest.FixtureRequest) -> UpProcess:
    """The run's `tcscale up`, ready (started at first use; test_up.py stops it, a later user starts another)."""
    return shared_up(request)
