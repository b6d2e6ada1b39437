"""What every bench needs: a sandbox in its own process, real SDK clients, process stats, results."""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from sandbox.core.emulated_cloud import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REGION = "ap-guangzhou"
ZONE = "ap-guangzhou-3"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Poll `url` until it answers (any status), or fail when the process died or the deadline passed."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.05)


# The data-plane benches' default ports (servers' SSH, and the port that stands for real port 80), clear of the
# tests' defaults; `--ssh-port` / `--app-port` move them when several people share the machine.
SSH_PORT, APP_PORT = 3222, 9281


def add_port_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ssh-port", type=int, default=SSH_PORT, help="the sandbox servers' SSH port")
    parser.add_argument("--app-port", type=int, default=APP_PORT, help="where the sandbox serves real port 80")


class SandboxProcess:
    """`python -m sandbox serve` on a free port, in its own process (the thing being measured)."""

    def __init__(
        self,
        *extra_args: str,
        state_dir: Path | None = None,
        rate_limit: int = 0,
        ssh_port: int | None = None,
        app_port: int | None = None,
    ) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "sandbox", "serve", "--port", str(self.port), "--rate-limit", str(rate_limit)]
        if ssh_port is not None:
            args += ["--ssh-port", str(ssh_port)]
        if app_port is not None:
            args += ["--app-port", str(app_port)]
        args += list(extra_args)
        if state_dir is not None:
            args += ["--state-dir", str(state_dir)]
        self.process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
        self.endpoint = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.endpoint}"

    def __enter__(self) -> "SandboxProcess":
        wait_http(f"{self.url}/_sandbox/health", self.process)
        return self

    def __exit__(self, *_: object) -> None:
        stop(self.process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin(self, method: str, path: str, body: object = None, timeout: float = 120.0) -> Any:
        response = httpx.request(method, f"{self.url}/_sandbox/{path}", json=body, timeout=timeout)
        response.raise_for_status()
        return response.json()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sdk_client(client_class: type, endpoint: str, region: str = REGION) -> Any:
    """A real SDK client of the default sandbox credentials, keeping its connection alive."""
    cred = credential.Credential(DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY)
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=endpoint, keepAlive=True))
    return client_class(cred, region, profile)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15 of stat)


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))  # every row's, in order
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return "" if value is None else str(value)


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results = {"bench": name, "when": when, "cpus": os.cpu_count(), "load_at_end": os.getloadavg(), **results}
    path.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {path.relative_to(ROOT)}")
    return path
