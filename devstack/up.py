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
work directory (`<workdir>/logs/<child>.log`); a second `tcscale up` on it finds the same servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import typer

from devstack.prefect_server import DATABASE_CACHE, PrefectServer, free_port, migrated_sqlite_database
from tasks.waiters import WaitFailed, WaitTimeout, wait_until

DEFAULT_WORKDIR = Path.home() / ".tcscale" / "up"
TRY_USER, TRY_CHAT = "you", "laptop"  # the allowlist of the local bridge lets this user run everything here
STARTUP_TIMEOUT = 240.0
# The WeCom group robot's settings `tcscale up` passes to the bridge: its secrets (each also as <VAR>_FILE, as for
# `tcscale setup`, which seeds their Secret blocks) and its aibotid; then the optional ones.
ROBOT_SECRETS = ("TCSCALE_CHATOPS_WECOM_ROBOT_TOKEN", "TCSCALE_CHATOPS_WECOM_ROBOT_AES_KEY")
ROBOT_ID = "TCSCALE_CHATOPS_WECOM_ROBOT_ID"
ROBOT_OPTIONAL = ("TCSCALE_CHATOPS_WECOM_ROBOT_RECEIVE_ID", "TCSCALE_CHATOPS_WECOM_ROBOT_RESPONSE_BASE")


class StackError(Exception):
    """A part of the stack did not come up, or died; the message says which and where its log is."""


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
        # A new folder's server starts from a copy of a migrated database (made once per Prefect version, shared with
        # the demo and the tests): its migrations cost ~4 s of CPU at every first start.
        self.server = PrefectServer(
            workdir / "prefect",
            port=self.options.server_port,
            startup_timeout=STARTUP_TIMEOUT,
            database_template=migrated_sqlite_database(DATABASE_CACHE),
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


def local_secrets(path: Path) -> dict[str, str]:
    """The stack's generated secrets (sandbox API key pair, chat signing secret): made once, mode 0600."""
    if path.exists():
        return json.loads(path.read_text())
    values = {
        "sandbox_secret_id": "AKID" + secrets.token_hex(16),
        "sandbox_secret_key": secrets.token_hex(16),
        "chat_signing_secret": secrets.token_urlsafe(32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(values, file)
    return values


def seed_sandbox(url: str, key_file: Path) -> dict[str, Any]:
    """The guide's starting point (`POST /_sandbox/seed`) plus every server's known_hosts lines."""
    response = httpx.post(f"{url}/_sandbox/seed", json={"key_file": str(key_file)}, timeout=120)
    if response.status_code != 200:
        raise StackError(f"the sandbox's seed answered {response.status_code}: {response.text}")
    seed: dict[str, Any] = response.json()
    servers = httpx.get(f"{url}/_sandbox/servers", timeout=30).json()["servers"]
    seed["known_hosts"] = [line for server in servers for line in server["known_hosts"]]
    return seed


def wecom_robot_env(env: Mapping[str, str]) -> dict[str, str]:
    """The bridge's env that enables the WeCom group robot's route, from the shell's robot settings; {} when none
    is set; a StackError naming what is missing (never a value) when only some are."""
    from deployments.setup import SetupError, secret_value

    found: dict[str, str] = {}
    missing = []
    for var in ROBOT_SECRETS:
        try:
            value, _ = secret_value(env, var)
        except SetupError as error:
            raise StackError(str(error)) from None
        if value is None:
            missing.append(f"{var} (or {var}_FILE)")
        else:
            found[var] = value
    if env.get(ROBOT_ID):
        found[ROBOT_ID] = env[ROBOT_ID]
    else:
        missing.append(f"{ROBOT_ID} (the robot's aibotid)")
    if not found:
        return {}
    if missing:
        raise StackError("the WeCom group robot is half configured: set " + ", ".join(missing) + " (or none of them)")
    optional = {var: env[var] for var in ROBOT_OPTIONAL if var in env}
    return {**found, **optional, "TCSCALE_CHATOPS_PLATFORMS": "generic,wecom-robot"}


def write_declaration(seed: dict[str, Any], count: int, path: Path) -> Path:
    from devstack.demo import seed_declaration
    from flows.declaration import dump_declaration

    path.write_text(json.dumps(dump_declaration(seed_declaration(seed, count)), indent=2))
    return path


def chat_command(bridge_url: str, secret: str, text: str) -> str:
    """A `curl` line that posts `text` to the bridge's generic route, signed now (valid for the bridge's window)."""
    from chatops.signing import sign_generic

    message = {"message_id": f"try-{secrets.token_hex(6)}", "user": TRY_USER, "chat": TRY_CHAT, "text": text}
    body = json.dumps(message)
    headers = sign_generic(secret, body.encode(), int(time.time()))
    parts = ["curl", "-sS", "-X", "POST", f"{bridge_url}/chat/generic", "-H", "Content-Type: application/json"]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    return shlex.join([*parts, "--data-binary", body])


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
