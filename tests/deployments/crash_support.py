"""Served in a child process by tests/deployments/test_crashes.py: a stand-in for a tcscale flow that runs until its
process is killed (named like tcscale's session-tier flow, so the automations cover it), and the real cleanup-run
deployment (its runs are created, not run: the test kills this process first)."""

from __future__ import annotations

import threading
from typing import Any

from prefect import flow, serve

from deployments.serve import load_flow


@flow(name="scale-out-session-tier")
def stand_in(params: dict[str, Any]) -> None:
    threading.Event().wait()  # until the process is killed: a power cut in mid-run


if __name__ == "__main__":
    cleanup = load_flow("flows/entrypoints.py:cleanup")
    serve(
        stand_in.to_deployment(name="session-tier", tags=["tcscale"]),
        cleanup.to_deployment(name="cleanup", tags=["tcscale", "cleanup"]),
        pause_on_shutdown=False,
        print_starting_message=False,
    )
