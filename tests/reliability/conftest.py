"""The fault and crash matrices' summaries, printed at the end of the session (under xdist too: each case's numbers
travel in its report's user_properties, named after its matrix). The whole matrices run for a long time: with
TCSCALE_MATRIX_RESULTS=<file> each case's numbers are also appended to that file (JSON lines) as it finishes, so a
cut-short run still tells."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest

MATRICES = {"fault_matrix": "fault matrix", "crash_matrix": "crash matrix"}
RESULTS: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in MATRICES}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name in RESULTS:
            found = RESULTS[name][report.nodeid] = {**json.loads(value), "xfail": hasattr(report, "wasxfail")}
            if os.environ.get("TCSCALE_MATRIX_RESULTS") and not os.environ.get("PYTEST_XDIST_WORKER"):  # once
                with open(os.environ["TCSCALE_MATRIX_RESULTS"], "a") as results:
                    line = {"matrix": name, "case": report.nodeid, **found, "seconds": round(report.duration, 1)}
                    results.write(json.dumps(line) + "\n")


def summary(results: dict[str, dict[str, Any]]) -> list[str]:
    outcomes = Counter(r["outcome"] for r in results.values())
    lines = [
        f"cases: {len(results)}",
        "outcomes: " + ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items())),
        f"  of which known defects (xfail): {sum(1 for r in results.values() if r['xfail'])}",
        f"leaked (or removed) resources, bindings and rules: {sum(r['leaked'] for r in results.values())}",
        f"duplicated resources: {sum(r['duplicates'] for r in results.values())}",
        f"sdk.config changed other than as intended: {sum(r['configs_changed'] for r in results.values())}",
        f"cases that touched the operator's resources: {sum(1 for r in results.values() if r['operator_touched'])}",
    ]
    if any("throttled_not_retried" in r for r in results.values()):
        throttled = sum(1 for r in results.values() if r.get("throttled_not_retried"))
        lines.append(f"throttling bursts that ended in an undo, not a retry: {throttled}")
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, title in MATRICES.items():
        if RESULTS[name]:
            terminalreporter.write_sep("=", title)
            for line in summary(RESULTS[name]):
                terminalreporter.write_line(line)
