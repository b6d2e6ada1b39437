"""The multi-machine path, rehearsed on one machine: `python -m devstack.rehearsal` (`make rehearse`).

What a team runs on several machines, each piece in its own process: PostgreSQL (the Debian package, a
temporary cluster), a Prefect server on it with an auth string, the sandbox seeded with the guide's starting
point (the team's Tencent Cloud), `tcscale setup` + `prefect deploy --all`, TWO process workers on pool `tcscale`,
each in its own empty folder with its own PREFECT_HOME and no TCSCALE_* environment (the deployments' git_clone
pull step brings them the code, the job variables and Secret blocks the rest), and the chatops bridge. Then ten
signed chat commands over both tiers; every run is waited for, and the rehearsal checks, from the Prefect API
alone, that the runs spread over both workers, that no two runs of one tier held the tier's lock at the same
time, and that no command was lost. It exits 1 when a check fails, and stops every process it started
(PostgreSQL too) on the way out, Ctrl-C and SIGTERM included.
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
import time
from pathlib import Path
from typing import Any

import httpx

from devstack.postgres import LocalPostgres
from devstack.prefect_server import PrefectServer, free_port
from devstack.rehearsal_checks import Command, check, collect, print_report
from devstack.up import Child, seed_sandbox, tail, write_declaration
from tasks.waiters import wait_until

ROOT = Path(__file__).resolve().parent.parent
POOL = "tcscale"
WORKERS = ("worker-a", "worker-b")
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


def workers_online(server: PrefectServer, auth: str) -> int:
    user, _, password = auth.partition(":")
    answer = httpx.post(f"{server.api_url}/work_pools/{POOL}/workers/filter", json={}, auth=(user, password), timeout=5)
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


def rehearse(workdir: Path, ssh_port: int | None, app_port: int | None, prefect_file: Path) -> bool:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"rehearsal in {workdir} (logs in {logs})", flush=True)
    started = time.monotonic()
    children: list[Child] = []
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(LocalPostgres())
        print(f"- PostgreSQL {'.'.join(map(str, postgres.version or ()))} on 127.0.0.1:{postgres.port}", flush=True)
        auth = f"tcscale:{secrets.token_urlsafe(12)}"
        server = PrefectServer(workdir / "server", database_url=postgres.database_url, auth_string=auth)
        stack.callback(server.stop)  # registered first: a Ctrl-C while it starts stops it too
        server.start()
        print(f"- Prefect server {server.url} on PostgreSQL, basic auth on ({time.monotonic() - started:.0f} s)")
        stack.callback(lambda: [child.stop() for child in reversed(children)])

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
            **server.client_env(),
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
        deploy = [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(prefect_file),
        ]
        run_step("prefect deploy --all", deploy, env, logs / "deploy.log")

        for name in WORKERS:  # "other machines": an empty folder, their own PREFECT_HOME, no TCSCALE_* at all
            folder = workdir / name
            folder.mkdir()
            worker_env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("TCSCALE_", "PREFECT_"))},
                **server.client_env(),
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
        wait_until(lambda: workers_online(server, auth), done=lambda n: n >= len(WORKERS),
                   failed=lambda _: exited(children), what="both workers online", timeout=120)  # fmt: skip
        print(f"- bridge {bridge_url}; both workers online ({time.monotonic() - started:.0f} s)", flush=True)

        sent = commands()
        print(f"\nsending {len(sent)} signed chat commands as {CHAT_USER} in {CHAT_ROOM} ...", flush=True)
        sent_at = int(time.time())
        for number, command in enumerate(sent, 1):
            command.answer = sign_and_send(bridge_url, signing_secret, f"rehearsal-{sent_at}-{number}", command.text)
            command.run_id = command.answer.get("run_id")
            print(f"  {number:2}. {command.text:<22} -> {command.answer.get('text', command.answer)}", flush=True)

        facts = collect(server.api_url, auth, sent, failed=lambda _: exited(children))
        print_report(facts)
        failures = check(facts, sent, WORKERS)
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
