"""`tcscale up` from a fresh clone, shared by test_browser.py (which drives its UI) and test_up.py (which stops it).

The clone is `git clone` of this checkout's HEAD (what a newcomer gets); it runs with this test run's
interpreter (`python -m cli up`, PYTHONPATH=<clone>), so no second virtualenv is synced.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.sdk import poll

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 300.0  # a busy 2-core machine: server ~30 s, serve imports and registers every deployment
URL_LINE = re.compile(r"^\s+(Prefect UI|Prefect API|sandbox \(cloud\)|chat bridge)\s+(http://\S+)")
KEY = pytest.StashKey["UpProcess"]()
# A call to the stack (its Prefect API) as Prefect's own client makes it: a try may wait this long, and a timeout or a
# 503 (its SQLite busy: serve registering, the scheduler and the automations writing) is tried again, with backoff,
# until the call's deadline (CI, loaded 2 cores, once saw no answer within 10 s).
API_TRY_TIMEOUT = 30.0
API_DEADLINE = 120.0


class UpProcess:
    def __init__(self, clone: Path, workdir: Path) -> None:
        self.clone = clone
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_UI", "TCSCALE_"))}
        env.update(PYTHONPATH=str(clone), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--workdir", str(workdir)],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # like a terminal: signals reach `up` itself only
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.urls: dict[str, str] = {}
        self.tried: dict[str, dict] = {}  # the printed chat commands' answers, by command text
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if match := URL_LINE.match(line):
                self.urls[match.group(1)] = match.group(2)
            if line.strip() == "ready":
                self.ready.set()
        self.ready.set()  # the output ended: `wait_ready` reports why

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> UpProcess:
        started = time.monotonic()
        if not self.ready.wait(READY_TIMEOUT) or "ready" not in self.lines:
            raise AssertionError(f"`tcscale up` not ready after {time.monotonic() - started:.0f} s:\n{self.output}")
        return self

    @property
    def api_url(self) -> str:
        return self.urls["Prefect API"]

    @property
    def ui_url(self) -> str:
        return self.urls["Prefect UI"]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120.0) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            for pid in processes_in(self.clone):
                os.kill(pid, signal.SIGKILL)
            raise


def api(method: str, url: str, json_body: object = None, deadline: float = API_DEADLINE) -> httpx.Response:
    """`method url` on the stack (its Prefect API, the sandbox's), tried again on a timeout or a 503 until `deadline`
    seconds have passed."""
    ends, delay = time.monotonic() + deadline, 0.5
    while True:
        try:
            response = httpx.request(method, url, json=json_body, timeout=API_TRY_TIMEOUT)
            if response.status_code != 503:
                return response
            failure = f"503 {response.text[:200]}"
        except httpx.TimeoutException as exc:
            failure = f"{type(exc).__name__} after {API_TRY_TIMEOUT:g} s"
        if time.monotonic() + delay > ends:
            raise AssertionError(f"{method} {url}: no answer within {deadline:g} s (last: {failure})")
        time.sleep(delay)  # the backoff between two tries of a busy server, as Prefect's client waits
        delay = min(delay * 2, 8.0)


def processes_in(folder: Path) -> list[int]:
    """Every live process whose working directory is `folder` (the stack's children inherit the clone's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, int(port))) == 0


def shared_up(request: pytest.FixtureRequest) -> UpProcess:
    """One `tcscale up` per test session (started on first use, stopped at the session's end if still up)."""
    stack = request.config.stash.get(KEY, None)
    if stack is not None and stack.process.poll() is None:
        return stack.wait_ready()
    base = request.getfixturevalue("tmp_path_factory").mktemp("up")
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    stack = UpProcess(clone, base / "work")
    request.config.stash[KEY] = stack
    request.config.add_cleanup(stack.stop)
    stack.wait_ready()
    for text in ("status", "plan scale session 1"):  # tried at once, as printed (signed for 5 minutes)
        stack.tried[text] = send(printed(stack, f'"{text}"'))
    return stack


def printed(stack: UpProcess, text: str) -> str:
    return next(line.strip() for line in stack.lines if line.strip().startswith("curl") and text in line)


def send(line: str) -> dict:
    """Run a printed curl line (or, without curl, the same request); the bridge's JSON answer."""
    if shutil.which("curl"):
        answer = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=60, check=True).stdout
    else:
        words = shlex.split(line)
        headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
        body = words[words.index("--data-binary") + 1]
        answer = httpx.post(words[4], content=body, headers=headers, timeout=60).text
    return json.loads(answer)


def deployment_id(stack: UpProcess, name: str) -> str:
    flow, deployment = name.split("/")
    response = api("GET", f"{stack.api_url}/deployments/name/{flow}/{deployment}")
    assert response.status_code == 200, f"deployment {name}: {response.status_code} {response.text}"
    return str(response.json()["id"])


def start_run(stack: UpProcess, name: str, parameters: dict[str, object]) -> str:
    """Create a run of deployment `name` through the REST API (as the UI's Run button does); its id."""
    url = f"{stack.api_url}/deployments/{deployment_id(stack, name)}/create_flow_run"
    body = {"parameters": parameters, "idempotency_key": f"test-{uuid.uuid4()}"}  # a retry never makes two runs
    created = api("POST", url, body)
    assert created.status_code in (200, 201), created.text
    return str(created.json()["id"])


def finished(stack: UpProcess, run_id: str, timeout: float = 180.0) -> dict:
    """The run once in a final state, which must be Completed."""

    def read() -> dict:
        return api("GET", f"{stack.api_url}/flow_runs/{run_id}").json()

    run = poll(read, done=lambda r: r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"),
               what=f"flow run {run_id} to finish", timeout=timeout)  # fmt: skip
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{stack.output}"
    return run
