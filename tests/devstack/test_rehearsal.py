"""The multi-machine rehearsal end to end (slow: PostgreSQL, Redis, two Prefect servers behind a round-robin, two
workers, ten chat commands, one server SIGKILLed while a change holds its tier)."""

import os
import shutil
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
@pytest.mark.skipif(shutil.which("redis-server") is None and os.geteuid() != 0, reason="Redis is not installed")
def test_rehearsal_survives_losing_a_server_serialises_tiers_and_loses_nothing(tmp_path: Path) -> None:
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
    assert "SIGKILLed server-a at " in done.stdout  # while a change held its tier
    assert "final active slots: business 0, session 0" in done.stdout
    # What it started is gone (the sandbox's and redis-server's command lines name the work folder).
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == []
