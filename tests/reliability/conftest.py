"""The fault matrix's summary, printed at the end of the session (under xdist too: each case's numbers travel in
its report's user_properties). The whole matrix runs for a long time: with TCSCALE_MATRIX_RESULTS=<file> each
case's numbers are also appended to that file (JSON lines) as it finishes, so a cut-short run still tells."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest

RESULTS: dict[str, dict[str, Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == "fault_matrix":
            RESULTS[report.nodeid] = json.loads(value)
            if os.environ.get("TCSCALE_MATRIX_RESULTS") and not os.environ.get("PYTEST_XDIST_WORKER"):  # once
                with open(os.environ["TCSCALE_MATRIX_RESULTS"], "a") as results:
                    line = {"case": report.nodeid, **RESULTS[report.nodeid], "seconds": round(report.duration, 1)}
                    results.write(json.dumps(line) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    outcomes = Counter(r["outcome"] for r in RESULTS.values())
    lines = [
        f"cases: {len(RESULTS)}",
        "outcomes: " + ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items())),
        f"leaked (or removed) resources, bindings and rules: {sum(r['leaked'] for r in RESULTS.values())}",
        f"duplicated resources: {sum(r['duplicates'] for r in RESULTS.values())}",
        f"sdk.config changed other than as intended: {sum(r['configs_changed'] for r in RESULTS.values())}",
        f"cases that touched the operator's resources: {sum(1 for r in RESULTS.values() if r['operator_touched'])}",
        "throttling bursts that ended in an undo, not a retry: "
        + str(sum(1 for r in RESULTS.values() if r.get("throttled_not_retried"))),
    ]
    terminalreporter.write_sep("=", "fault matrix")
    for line in lines:
        terminalreporter.write_line(line)
