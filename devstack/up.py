"""`tcscale up`: the whole local stack in one process tree, until Ctrl-C.

In order: a real Prefect server with its UI on 127.0.0.1 (`PrefectServer`), the sandbox (`sandbox serve` as a
child: a local Tencent Cloud) seeded with the guide's starting point, the cluster declaration of that seed
(`<workdir>/cluster.json`, `TCSCALE_CLUSTER_FILE`), the deployments served with their schedules (`tcscale serve`,
its runs sending heartbeats), the chatops bridge (`tcscale chatops`) with a generated signing secret (and the
WeCom group robot's route when the shell sets the robot's Token, EncodingAESKey and ID), then
`tcscale setup` (with the automations that mark a dead run Crashed and clean it up). It prints the
URLs and ready-made signed chat commands, then "ready". Ctrl-C (SIGINT) or SIGTERM stops every child in the
reverse order (bridge, serve, sandbox, server) and exits 0; a child that dies on its own stops the stack (exit 1).

Every child runs in its own session, so a Ctrl-C in the terminal reaches this supervisor only, which stops
each child's whole process group (a flow run that `serve` started goes with it). State and logs stay in the
work directory (`<workdir>/logs/<child>.log`); a second `tcscale up` on it finds the same servers. What the parts are
given (secrets, seed, declaration, the robot's env) and the chat commands printed: devstack/up_inputs.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import typer

from devstack.prefect_server import DATABASE_CACHE, PrefectServer, free_port, sqlite_template
from devstack.up_inputs import (
    TRY_CHAT,
    TRY_USER,
    StackError,
    chat_command,
    local_secrets,
    seed_sandbox,
    wecom_robot_env,
    write_declaration,
)
from tasks.waiters import WaitFailed, WaitTimeout, wait_until

DEFAULT_WORKDIR = Path.home() / ".tcscale" / "up"
STARTUP_TIMEOUT = 240.0


class Interrupted(Exception):
    """SIGINT or SIGTERM: stop the stack in order and exit 0."""


@dataclass
class UpOptions:
    workdir: Path = DEFAULT_WORKDIR
    count: int = 2
    server_port: int | None = None
    sandbox_port: int | None = None
    bridge_port: int | None = None
    ssh_port: int | None = None
    app_port: int | None = None


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGINT
    log_start: int = 0  # the log's size when this child started (logs are kept across runs)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Signal the child's whole process group, then SIGKILL what is left after `timeout`."""
        for sig, wait in ((self.stop_signal, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            _kill_group(self.process.pid)  # the leader is gone: what it left behind in its group goes too
            return


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


Starting = tuple[Child, Callable[[], bool], str]  # a child, "is it up?", what it is


@dataclass
class Stack:
    options: UpOptions
    server: PrefectServer | None = None
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    signing_secret: str = ""
    robot_env: dict[str, str] = field(default_factory=dict)  # the bridge's WeCom group robot settings, if any

    @property
    def workdir(self) -> Path:
        return self.options.workdir

    def start(self) -> None:
        workdir = self.workdir
        self.robot_env = wecom_robot_env(os.environ)  # a half-configured robot stops `up` before anything starts
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        keys = local_secrets(workdir / "secrets.json")
        self.signing_secret = keys["chat_signing_secret"]
        sandbox = self._sandbox(keys)  # starts while the server does
        echo(f"up: starting the Prefect server and the sandbox (state and logs in {workdir}) ...")
        # A new folder's server starts from a copy of a migrated database (one per Prefect version, shared with the
        # demo and the tests; the first server to find none migrates its own and keeps a copy): ~4 s of CPU saved.
        self.server = PrefectServer(
            workdir / "prefect",
            port=self.options.server_port,
            startup_timeout=STARTUP_TIMEOUT,
            database_template=sqlite_template(DATABASE_CACHE),
        )
        self.server.start()
        self.urls.update(ui=self.server.ui_url, api=self.server.api_url)
        self._ready(*sandbox)
        sandbox_url = self.urls["sandbox"]
        seed = seed_sandbox(sandbox_url, workdir / "guide.pem")
        cluster_file = write_declaration(seed, self.options.count, workdir / "cluster.json")
        echo(
            f"up: sandbox seeded: session server {seed['session_server']['private_ip']}, business server "
            f"{seed['business_server']['private_ip']}; cluster declaration {cluster_file}"
        )
        self.env = {
            **os.environ,
            **self.server.client_env(),
            "PREFECT_HOME": str(workdir / "client"),
            "TCSCALE_ENDPOINT": sandbox_url.removeprefix("http://"),
            "TCSCALE_PROTOCOL": "http",
            "TCSCALE_SECRET_ID": keys["sandbox_secret_id"],
            "TCSCALE_SECRET_KEY": keys["sandbox_secret_key"],
            "TCSCALE_CLUSTER_FILE": str(cluster_file),
            "TCSCALE_SSH_KEY_FILE": seed["key_pair"]["private_key_file"],  # `tcscale setup`: Secret tcscale-ssh-key
            "TCSCALE_CHATOPS_SIGNING_SECRET": self.signing_secret,
        }
        # serve and the bridge need only the server: they start together. setup runs once the deployments are
        # served: its automation that cleans up a crashed run names the served cleanup-run deployment.
        starting = [part for part in (self._serve(), self._bridge()) if part is not None]
        for part in starting:
            self._ready(*part)
        setup = self._setup()
        if setup is not None:
            self._setup_done(setup)

    # ---- the parts -----------------------------------------------------------------------------------
    def _sandbox(self, keys: dict[str, str]) -> Starting:
        port = self.options.sandbox_port or free_port()
        command = ["-m", "sandbox", "serve", "--port", str(port), "--state-dir", str(self.workdir / "sandbox")]
        command += ["--secret-id", keys["sandbox_secret_id"]]
        for name in ("ssh_port", "app_port"):
            value = getattr(self.options, name)
            if value is not None:
                command += [f"--{name.replace('_', '-')}", str(value)]
        env = {**os.environ, "SANDBOX_SECRET_KEY": keys["sandbox_secret_key"]}  # never on a command line
        child = self._spawn("sandbox", command, env, stop_signal=signal.SIGTERM)
        self.urls["sandbox"] = url = f"http://127.0.0.1:{port}"
        return child, answers(f"{url}/_sandbox/health"), f"the sandbox ({url})"

    def _setup(self) -> Child | None:
        if not has_command("setup"):
            echo("up: `tcscale setup` is not available in this checkout: skipped")
            return None
        return self._spawn("setup", ["-m", "cli", "setup"], self.env)

    def _setup_done(self, child: Child) -> None:
        code = child.process.wait(STARTUP_TIMEOUT)
        self.children.remove(child)
        if code != 0:
            raise StackError(f"`tcscale setup` failed ({code}): {tail(child.log)}")
        with child.log.open("rb") as log:
            log.seek(child.log_start)
            output = log.read().decode(errors="replace")
        for line in output.splitlines():
            if "skipped" not in line:  # the WeCom secrets, unused here
                echo(f"up: setup: {line}")

    def _serve(self) -> Starting | None:
        if not has_command("serve"):
            echo("up: `tcscale serve` is not available in this checkout: no deployments served")
            return None
        from deployments.serve import deployment_specs

        since = datetime.now(UTC) - timedelta(seconds=1)
        child = self._spawn("serve", ["-m", "cli", "serve"], self.env)
        assert self.server is not None
        names = [spec["name"] for spec in deployment_specs()]
        return child, served(self.server.api_url, names, since), f"the {len(names)} deployments served"

    def _bridge(self) -> Starting | None:
        if not has_command("chatops"):
            echo("up: `tcscale chatops` is not available in this checkout: no chat bridge")
            return None
        port = self.options.bridge_port or free_port()
        allowlist = {"rules": [{"users": [TRY_USER], "chats": [TRY_CHAT], "commands": ["*"]}]}
        env = {
            **self.env,
            "TCSCALE_CHATOPS_PORT": str(port),
            "TCSCALE_CHATOPS_STATE_DIR": str(self.workdir / "chatops"),
            "TCSCALE_CHATOPS_ALLOWLIST": json.dumps(allowlist),
            **self.robot_env,
        }
        child = self._spawn("bridge", ["-m", "cli", "chatops", "--port", str(port)], env)
        self.urls["bridge"] = url = f"http://127.0.0.1:{port}"
        if self.robot_env:
            self.urls["wecom-robot"] = f"{url}/chat/wecom-robot"
        return child, answers(f"{url}/health"), f"the chatops bridge ({url})"

    # ---- children ------------------------------------------------------------------------------------
    def _spawn(self, name: str, arguments: list[str], env: dict[str, str], stop_signal: int = signal.SIGINT) -> Child:
        log = self.workdir / "logs" / f"{name}.log"
        with log.open("ab") as output:
            start = output.tell()
            process = subprocess.Popen(
                [sys.executable, *arguments],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops the children in order
            )
        child = Child(name, process, log, stop_signal, start)
        self.children.append(child)
        return child

    def _ready(self, child: Child, up: Callable[[], bool], what: str) -> None:
        def exited(_: bool) -> str | None:
            if child.alive():
                return None
            return f"{what} exited with {child.process.returncode}: {tail(child.log)}"

        wait_until(up, done=bool, failed=exited, what=what, timeout=STARTUP_TIMEOUT, first_delay=0.2, max_delay=1.0)

    def check(self) -> None:
        """StackError when a child died on its own."""
        server = self.server.process if self.server else None
        if server is not None and server.poll() is not None:
            raise StackError(f"the Prefect server exited with {server.returncode}: {tail(self.server.log_path)}")
        for child in self.children:
            if not child.alive():
                raise StackError(f"{child.name} exited with {child.process.returncode}: {tail(child.log)}")

    def stop(self) -> None:
        """Bridge, serve, sandbox, then the server: each one's whole process group."""
        for child in reversed(self.children):
            if child.alive():
                echo(f"up: stopping {child.name} ...")
            child.stop()
        self.children.clear()
        if self.server is not None:
            echo("up: stopping the Prefect server ...")
            self.server.stop()
            self.server = None


# ---- pieces ----------------------------------------------------------------------------------------------
def echo(line: str) -> None:
    typer.echo(line)
    sys.stdout.flush()


def answers(url: str) -> Callable[[], bool]:
    """Does `url` answer 200?"""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def served(api_url: str, names: list[str], since: datetime) -> Callable[[], bool]:
    """Has `serve` (started at `since`) registered every deployment of `names`? (A second `up` on the same work
    directory finds last time's deployments: only those `serve` updated since it started count.)"""

    def check() -> bool:
        query = {"deployments": {"name": {"any_": names}}}
        try:
            found = httpx.post(f"{api_url}/deployments/filter", json=query, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return False
        fresh = {d["name"] for d in found if datetime.fromisoformat(d["updated"]) >= since}
        return fresh >= set(names)

    return check


def has_command(name: str) -> bool:
    """Is `tcscale <name>` in this checkout? (The stack starts what there is.)"""
    from cli.main import app

    return any((info.name or info.callback.__name__) == name for info in app.registered_commands if info.callback)


def tail(log: Path, chars: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-chars:].strip() + f"\n(log: {log})"
    except OSError:
        return f"(no log at {log})"


def announce(stack: Stack) -> None:
    urls = stack.urls
    echo("")
    echo(f"  Prefect UI       {urls['ui']}")
    echo(f"  Prefect API      {urls['api']}")
    echo(f"  sandbox (cloud)  {urls['sandbox']}   (TCSCALE_ENDPOINT={urls['sandbox'].removeprefix('http://')})")
    if "bridge" in urls:
        echo(f"  chat bridge      {urls['bridge']}/chat/generic")
        echo("\nTry a chat command (signed now; the bridge accepts it for 5 minutes):")
        echo("  " + chat_command(urls["bridge"], stack.signing_secret, "status"))
        echo("  " + chat_command(urls["bridge"], stack.signing_secret, "plan scale session 1"))
    if "wecom-robot" in urls:
        echo(f"\n  WeCom robot      {urls['wecom-robot']}   (the robot's API settings URL, once WeCom can reach it)")
    echo(f"\nLogs: {stack.workdir / 'logs'}. Ctrl-C stops everything.")
    echo("ready")


def run_up(options: UpOptions) -> int:
    """Start the stack, wait for Ctrl-C / SIGTERM (0) or a child's death (1), stop it in order."""

    def interrupted(*_: Any) -> None:
        raise Interrupted

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(options)
    code = 0
    try:
        stack.start()
        announce(stack)
        while True:
            stack.check()
            time.sleep(1.0)  # the supervision tick (is every child alive?), not a readiness wait
    except Interrupted:
        echo("\nup: shutting down ...")
    except (StackError, WaitTimeout, WaitFailed, httpx.HTTPError, subprocess.TimeoutExpired) as error:
        echo(f"up: {error}")
        code = 1
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the orderly stop short
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0:
        echo("up: stopped")
    return code
