"""The multi-machine rehearsal end to end (slow: PostgreSQL, a Prefect server, two workers, ten chat commands)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.postgres import find_bindir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.timeout(1500)
@pytest.mark.skipif(find_bindir() is None and os.geteuid() != 0, reason="PostgreSQL is not installed")
def test_rehearsal_spreads_runs_serialises_tiers_and_loses_nothing(tmp_path: Path) -> None:
    ports = []
    for flag, var in (("--ssh-port", "TCSCALE_TEST_SSH_PORT"), ("--app-port", "TCSCALE_TEST_APP_PORT")):
        ports += [flag, os.environ[var]] if os.environ.get(var) else []
    done = subprocess.run(
        [sys.executable, "-m", "devstack.rehearsal", "--workdir", str(tmp_path), *ports],
        cwd=ROOT, capture_output=True, text=True, timeout=1400,
    )  # fmt: skip
    print(done.stdout[-6000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every check passed" in done.stdout
    assert "workers used: worker-a, worker-b" in done.stdout
    # What it started is gone (the sandbox's command line names the work folder).
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == []
