"""The multi-machine path, rehearsed on one machine: `python -m devstack.rehearsal` (`make rehearse`).

What a team runs on several machines, each piece in its own process: PostgreSQL and Redis (the Debian packages,
throwaway instances), TWO Prefect servers on them (each its API and its background services, sharing events,
concurrency leases and the services' Docket through Redis) with one auth string, a TCP round-robin in front of
them (the team's load balancer: every client talks to it), the sandbox seeded with the guide's starting point (the
team's Tencent Cloud), `tcscale setup` + `prefect deploy --all`, TWO process workers on pool `tcscale`, each in its
own empty folder with its own PREFECT_HOME and no TCSCALE_* environment (the deployments' git_clone pull step brings
them the code, the job variables and Secret blocks the rest), and the chatops bridge. Then ten signed chat commands
over both tiers; as soon as a change holds its tier's lock, one Prefect server is SIGKILLed (its machine lost).
Every run is waited for, and the rehearsal checks, from the Prefect API alone, that every run completed or undid
its changes (or was refused because its tier was busy), that the runs spread over both workers, that no two runs
of one tier held the tier's lock at the same time, that both servers served before the kill, and that no tier is
left locked at the end. It exits 1 when a check fails, and stops every process it started (PostgreSQL and Redis
too) on the way out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from devstack.lease_watch import LeaseWatch
from devstack.postgres import LocalPostgres
from devstack.prefect_server import PrefectServer, free_port, upgrade_database
from devstack.redis import LocalRedis
from devstack.rehearsal_checks import (
    Command,
    balancer_counts,
    check,
    check_failover,
    check_leases,
    check_tiers_free,
    collect,
    print_report,
    runs_in_flight,
    tier_limit_ids,
    tier_slots,
)
from devstack.up import Child, tail
from devstack.up_inputs import seed_sandbox, write_declaration
from tasks.waiters import wait_until

ROOT = Path(__file__).resolve().parent.parent
POOL = "tcscale"
WORKERS = ("worker-a", "worker-b")
SERVERS = ("server-a", "server-b")  # server-a is the one killed
CHAT_USER, CHAT_ROOM = "rehearsal-ops", "rehearsal-room"


def commands() -> list[Command]:
    """Ten commands over both tiers (chatops/commands.py's grammar): dry runs (`plan`: no lock), and
    quick real scale-outs against the sandbox, two per tier sent back to back so that the tier's lock is
    contended: the second waits for the first (serialised), or gives up after flows.shared.tier_lock.LOCK_WAIT_SECONDS
    (TierBusy: refused as designed)."""
    return [
        Command("plan scale session 1", "session"),
        Command("plan scale business 1", "business"),
        Command("scale session 1", "session", changes=True),
        Command("scale session 1", "session", changes=True),
        Command("scale business 1", "business", changes=True),
        Command("scale business 1", "business", changes=True),
        Command("plan scale session 2", "session"),
        Command("plan scale business 2", "business"),
        Command("plan scale session 3", "session"),
        Command("plan scale business 3", "business"),
    ]


def start_child(name: str, args: list[str], cwd: Path, env: dict[str, str], logs: Path) -> Child:
    """A child in its own session (Ctrl-C reaches the rehearsal, which stops the children in order), logged."""
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    return Child(name, process, log)


def exited(children: list[Child]) -> str | None:
    """Why the rehearsal cannot go on: a child that died on its own."""
    for child in children:
        if not child.alive():
            return f"{child.name} exited with {child.process.returncode}: {tail(child.log)}"
    return None


def run_step(what: str, args: list[str], env: dict[str, str], log: Path) -> None:
    """A one-shot command (setup, deploy) in the repository: output to its log; a failure with the log's tail."""
    print(f"- {what}", flush=True)
    with log.open("ab") as out:
        done = subprocess.run(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {tail(log, 3000)}")


def wait_ok(url: str, children: list[Child], what: str) -> None:
    def status() -> int:
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.HTTPError:
            return 0

    wait_until(status, done=lambda code: code == 200, failed=lambda _: exited(children), what=what, timeout=180)


def workers_online(api_url: str, auth: str) -> int:
    user, _, password = auth.partition(":")
    answer = httpx.post(f"{api_url}/work_pools/{POOL}/workers/filter", json={}, auth=(user, password), timeout=5)
    answer.raise_for_status()
    return sum(1 for w in answer.json() if w["name"] in WORKERS and w.get("status") == "ONLINE")


def sign_and_send(bridge_url: str, secret: str, message_id: str, text: str) -> dict[str, Any]:
    """One signed chat command to the bridge's generic route, as a chat bot sends it; the bridge's JSON answer."""
    from chatops.signing import sign_generic

    body = json.dumps({"message_id": message_id, "user": CHAT_USER, "chat": CHAT_ROOM, "text": text}).encode()
    headers = {"Content-Type": "application/json", **sign_generic(secret, body, int(time.time()))}
    response = httpx.post(f"{bridge_url}/chat/generic", content=body, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()


def start_servers(
    stack: contextlib.ExitStack, workdir: Path, children: list[Child], logs: Path, auth: str
) -> tuple[list[PrefectServer], str, str]:
    """PostgreSQL, Redis, the migrations once, two Prefect servers (API + services each) and the round-robin in
    front of them; the balancer's API URL, which every client uses, and the servers' Redis URL."""
    started = time.monotonic()
    postgres = stack.enter_context(LocalPostgres())
    print(f"- PostgreSQL {'.'.join(map(str, postgres.version or ()))} on 127.0.0.1:{postgres.port}", flush=True)
    redis = stack.enter_context(LocalRedis(workdir))
    print(f"- Redis {redis.version} on 127.0.0.1:{redis.port} (password auth)", flush=True)
    shared = redis.prefect_settings()
    upgrade_database(postgres.database_url, workdir / "migrations", shared)
    balancer_port = free_port()
    public_url = f"http://127.0.0.1:{balancer_port}"
    servers = []
    for name in SERVERS:
        server = PrefectServer(workdir / name, database_url=postgres.database_url, auth_string=auth,
                               shared_env=shared, migrate=False, public_url=public_url)  # fmt: skip
        stack.callback(server.stop)  # registered first: a Ctrl-C while it starts stops it too
        server.start()
        servers.append(server)
        print(f"- Prefect server {name} {server.url} (API + services) ({time.monotonic() - started:.0f} s)", flush=True)
    backends = [f"--backend={name}={s.host}:{s.port}" for name, s in zip(SERVERS, servers, strict=True)]
    balancer = [sys.executable, "-m", "devstack.tcp_balancer", "--port", str(balancer_port), *backends,
                "--stats", str(workdir / "balancer.json")]  # fmt: skip
    stack.callback(lambda: [child.stop() for child in reversed(children)])  # the children stop before the servers
    children.append(start_child("balancer", balancer, ROOT, dict(os.environ), logs))
    wait_ok(f"{public_url}/api/health", children, "the round-robin in front of the Prefect servers")
    print(f"- round-robin {public_url} over {', '.join(SERVERS)}: every client's PREFECT_API_URL", flush=True)
    return servers, f"{public_url}/api", redis.url()


class ServerKill:
    """SIGKILLs one Prefect server as soon as a change holds its tier's lock (a thread: the commands go on)."""

    def __init__(self, server: PrefectServer, api_url: str, auth: str, commands: list[Command]) -> None:
        self.server, self.api_url, self.auth, self.commands = server, api_url, auth, commands
        self.at: datetime | None = None
        self.held: dict[str, int] = {}
        self.in_flight: list[str] = []
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="server-kill", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.held = wait_until(lambda: tier_slots(self.api_url, self.auth), done=lambda s: any(s.values()),
                                   failed=lambda _: None, what="a change holding its tier's lock", timeout=600,
                                   first_delay=0.2, max_delay=0.5)  # fmt: skip
            self.server.kill()
            self.at = datetime.now(UTC)
            self.in_flight = runs_in_flight(self.api_url, self.auth, self.commands)
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def describe(self) -> str:
        if self.at is None:
            return f"no server was killed: {self.error or 'no change ever held its tier lock'}"
        held = ", ".join(f"{tier} {n}" for tier, n in sorted(self.held.items()))
        return (
            f"SIGKILLed {self.server.home.name} at {self.at.strftime('%H:%M:%S.%f')[:-5]} UTC while tier slots were "
            f"held ({held}); {len(self.in_flight)} run(s) not final then: {', '.join(self.in_flight) or '-'}"
        )


def rehearse(workdir: Path, ssh_port: int | None, app_port: int | None, prefect_file: Path) -> bool:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"rehearsal in {workdir} (logs in {logs})", flush=True)
    started = time.monotonic()
    children: list[Child] = []
    with contextlib.ExitStack() as stack:
        auth = f"tcscale:{secrets.token_urlsafe(12)}"
        servers, api_url, redis_url = start_servers(stack, workdir, children, logs, auth)
        client_env = servers[0].client_env()  # the balancer's URL and the auth string

        # The team's Tencent Cloud: the sandbox in its own process, seeded with the guide's starting point.
        sandbox_port, secret_id, secret_key = free_port(), "AKID" + secrets.token_hex(16), secrets.token_hex(16)
        command = [sys.executable, "-m", "sandbox", "serve", "--port", str(sandbox_port), "--secret-id", secret_id,
                   "--state-dir", str(workdir / "sandbox")]  # fmt: skip
        command += ["--ssh-port", str(ssh_port)] if ssh_port else []
        command += ["--app-port", str(app_port)] if app_port else []
        children.append(start_child("sandbox", command, ROOT, {**os.environ, "SANDBOX_SECRET_KEY": secret_key}, logs))
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        wait_ok(f"{sandbox_url}/_sandbox/health", children, "the sandbox")
        seed = seed_sandbox(sandbox_url, workdir / "guide.pem")
        cluster_file = write_declaration(seed, 1, workdir / "cluster.json")
        print(f"- sandbox (the team's cloud) {sandbox_url}, seeded in {seed['region']}", flush=True)

        signing_secret = secrets.token_urlsafe(24)
        env = {  # the operator's shell: setup, deploy and the bridge
            **os.environ,
            **client_env,
            "PREFECT_HOME": str(workdir / "operator"),
            "TCSCALE_ENDPOINT": sandbox_url.removeprefix("http://"),
            "TCSCALE_PROTOCOL": "http",
            "TCSCALE_SECRET_ID": secret_id,
            "TCSCALE_SECRET_KEY": secret_key,
            "TCSCALE_CLUSTER_FILE": str(cluster_file),
            "TCSCALE_CHATOPS_SIGNING_SECRET": signing_secret,
            "TCSCALE_GIT_REPOSITORY": ROOT.as_uri(),  # the pull step clones the team's repository (its HEAD)
        }
        run_step("tcscale setup", [sys.executable, "-m", "cli", "setup"], env, logs / "setup.log")
        deploy = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
                  str(prefect_file)]  # fmt: skip
        run_step("prefect deploy --all", deploy, env, logs / "deploy.log")

        for name in WORKERS:  # "other machines": an empty folder, their own PREFECT_HOME, no TCSCALE_* at all
            folder = workdir / name
            folder.mkdir()
            worker_env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("TCSCALE_", "PREFECT_"))},
                **client_env,
                "PREFECT_HOME": str(folder / ".prefect"),
                "PREFECT_WORKER_QUERY_SECONDS": "2",
            }
            args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name, "--limit", "2"]
            children.append(start_child(name, args, folder, worker_env, logs))
        print(f"- workers {', '.join(WORKERS)} on pool {POOL!r}, in {workdir}/worker-*", flush=True)

        bridge_port = free_port()
        allowlist = {"rules": [{"users": [CHAT_USER], "chats": [CHAT_ROOM], "commands": ["scale", "plan"]}]}
        bridge_env = {
            **env,
            "TCSCALE_CHATOPS_STATE_DIR": str(workdir / "chatops"),
            "TCSCALE_CHATOPS_ALLOWLIST": json.dumps(allowlist),
        }
        bridge = [sys.executable, "-m", "cli", "chatops", "--port", str(bridge_port)]
        children.append(start_child("bridge", bridge, ROOT, bridge_env, logs))
        bridge_url = f"http://127.0.0.1:{bridge_port}"
        wait_ok(f"{bridge_url}/health", children, "the chatops bridge")
        wait_until(lambda: workers_online(api_url, auth), done=lambda n: n >= len(WORKERS),
                   failed=lambda _: exited(children), what="both workers online", timeout=120)  # fmt: skip
        print(f"- bridge {bridge_url}; both workers online ({time.monotonic() - started:.0f} s)", flush=True)
        before_kill = balancer_counts(workdir / "balancer.json")

        sent = commands()
        watch = LeaseWatch(redis_url)  # the tier leases as the servers keep them, independent of the runs' events
        kill = ServerKill(servers[0], api_url, auth, sent)
        print(f"\nsending {len(sent)} signed chat commands as {CHAT_USER} in {CHAT_ROOM} ...", flush=True)
        sent_at = int(time.time())
        for number, command in enumerate(sent, 1):
            command.answer = sign_and_send(bridge_url, signing_secret, f"rehearsal-{sent_at}-{number}", command.text)
            command.run_id = command.answer.get("run_id")
            print(f"  {number:2}. {command.text:<22} -> {command.answer.get('text', command.answer)}", flush=True)

        kill.join(timeout=600)
        print(f"\n{kill.describe()}", flush=True)
        facts = collect(api_url, auth, sent, failed=lambda _: exited(children))
        print_report(facts)
        left, tiers = watch.stop(), {limit_id: tier for tier, limit_id in tier_limit_ids(api_url, auth).items()}
        leases = {tier: watch.holds(limit_id) for limit_id, tier in tiers.items()}
        failures = check(facts, sent, WORKERS, leases)
        failures += check_leases(
            leases, {tiers[i] for i in watch.overlaps}, {tiers[i] for i in left if i in tiers}, facts
        )
        failures += check_failover(kill.at, before_kill, balancer_counts(workdir / "balancer.json"), SERVERS)
        failures += check_tiers_free(api_url, auth, sent)
        for line in failures or ["every check passed"]:
            print(("FAILED: " if failures else "") + line)
        print(f"\nrehearsal took {time.monotonic() - started:.0f} s; stopping everything ...", flush=True)
    return not failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where state and logs go (default: a new temporary folder)")
    parser.add_argument("--ssh-port", type=int, help="the sandbox servers' SSH port (default: the sandbox's)")
    parser.add_argument("--app-port", type=int, help="where the sandbox serves real port 80 (default: the sandbox's)")
    parser.add_argument("--prefect-file", type=Path, default=ROOT / "prefect.yaml", help="the deployments to deploy")
    args = parser.parse_args(argv)

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and `kill` unwind the same way: every process started so far is stopped (SIGINT too when this was
    # started with SIGINT ignored, as a background job of a script is).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tcscale-rehearsal-"))
    try:
        return 0 if rehearse(workdir, args.ssh_port, args.app_port, args.prefect_file.absolute()) else 1
    except KeyboardInterrupt:
        print("\ninterrupted: every process the rehearsal started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
