"""A real Prefect server in a child process: what `tcscale up`, the rehearsal and the tests run.

Schedules never fire on Prefect's temporary (ephemeral) server, and `serve` needs a real one, so the local
stack starts `prefect server start` itself, on a free port of 127.0.0.1, with its own PREFECT_HOME.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from importlib.metadata import version
from pathlib import Path
from types import TracebackType

import httpx

from tasks.waiters import wait_until

FILESYSTEM_LEASES = "prefect.server.concurrency.lease_storage.filesystem"
MEMORY_LEASES = "prefect.server.concurrency.lease_storage.memory"  # Prefect's default
# Where `migrated_sqlite_database` keeps its databases for the tests and the demo: kept across runs and clones.
DATABASE_CACHE = Path(tempfile.gettempdir()) / "tcscale-prefect-databases"


def sqlite_template(cache: Path) -> Path:
    """Where this Prefect version's migrated SQLite database is kept in `cache` (made or not yet)."""
    # The version from the package's metadata: importing prefect here (maybe in a thread beside the importing
    # main thread, as in the demo) would cost ~1.5 s of CPU and fix Prefect's settings before the caller set them.
    return cache / f"prefect-{version('prefect')}.db"


def migrated_sqlite_database(cache: Path) -> Path:
    """An empty Prefect SQLite database already migrated to this Prefect's head, made once per Prefect version.

    A server started on a new database runs every migration first (~4 s of CPU); the tests start about ten
    servers, each from a copy of this one (`PrefectServer(database_template=...)`). Made under a lock, so parallel
    test workers make it once; published by rename, so nobody copies a half-made file.
    """
    cache.mkdir(parents=True, exist_ok=True)
    database = sqlite_template(cache)
    with (cache / f"{database.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            with tempfile.TemporaryDirectory(dir=cache) as work:
                made = Path(work) / "prefect.db"
                env = dict(os.environ, PREFECT_HOME=work)
                env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{made}"
                subprocess.run(
                    [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                    env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                )  # fmt: skip
                with sqlite3.connect(made) as connection:  # the copy is one file: no write-ahead log beside it
                    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                os.replace(made, database)
    return database


def keep_copy(database: Path, template: Path) -> None:
    """A consistent copy of `database` published at `template` by rename (SQLite's online backup: its server may be
    running), so nobody copies a half-made file."""
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as work:
        made = Path(work) / template.name
        with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(made)) as copy:
            source.backup(copy)
        os.replace(made, template)


def upgrade_database(database_url: str, home: Path, shared_env: dict[str, str] | None = None) -> None:
    """`prefect server database upgrade -y` once, before several servers start on the database (`migrate=False`)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(shared_env or {}), "PREFECT_HOME": str(home)}
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    with (home / "upgrade.log").open("ab") as log:
        subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=env, check=True, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip


# Our servers' ports: below the kernel's ephemeral range, which is all that another process's `bind(..., 0)`
# (Prefect's test servers pick their ports so) is given. A server of ours down for a restart keeps its port; one in
# that range was once taken mid-outage by a test server, whose answers the restarted server's clients then got.
PORTS_FROM = 28672  # above the sandboxes' mapped ports (TCSCALE_TEST_APP_PORT ranges)
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, below the ephemeral range (an ephemeral one where that range leaves no room)."""
    low = int(EPHEMERAL_RANGE.read_text().split()[0]) if EPHEMERAL_RANGE.exists() else 32768
    for port in random.sample(range(PORTS_FROM, low), min(200, max(low - PORTS_FROM, 0))):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue  # taken: another
            return port
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class PrefectServer:
    """`prefect server start` on `host:port` (a free port by default), state under `home`.

    `database_url` (postgresql+asyncpg://...) selects PostgreSQL; None keeps SQLite in `home`.
    `auth_string` ("user:password") turns on the server's basic auth; clients get it in `client_env()`.
    `lease_storage` keeps the concurrency leases (the tier locks): on disk under `home` by default, so a restarted
    server still knows who holds a tier and frees it when its holder is gone (Prefect's default, memory, forgets).
    `database_template` (SQLite only): a migrated database (`migrated_sqlite_database`) copied in when `home` has
    none yet, so the server skips the migrations; when it is not made yet, the server migrates its own and leaves a
    copy there for the next, taken as soon as it answers (one process migrating instead of one that migrates and
    another that starts; the copy also holds the block types the server registered on its start, if it did).
    Several servers on one database (docs/team-setup.md): `shared_env` is what they share (Redis: messaging, leases,
    the Docket: `LocalRedis.prefect_settings()`), `migrate=False` leaves the migrations to one
    `upgrade_database()` beforehand, and `public_url` is the load balancer in front, which clients and the UI use.
    """

    def __init__(
        self,
        home: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        database_url: str | None = None,
        auth_string: str | None = None,
        startup_timeout: float = 180.0,
        lease_storage: str = FILESYSTEM_LEASES,
        database_template: Path | None = None,
        shared_env: dict[str, str] | None = None,
        migrate: bool = True,
        public_url: str | None = None,
    ) -> None:
        self.home = home
        self.host = host
        self.port = port or free_port(host)
        self.database_url = database_url
        self.auth_string = auth_string
        self.startup_timeout = startup_timeout
        self.lease_storage = lease_storage
        self.database_template = database_template
        self.shared_env = shared_env or {}
        self.migrate = migrate
        self.public_url = public_url
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home / "server.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def ui_url(self) -> str:
        return self.public_url or self.url

    def client_env(self) -> dict[str, str]:
        """The environment a Prefect client (a flow, a worker, `prefect deploy`, the bridge) needs for this server."""
        env = {
            "PREFECT_API_URL": f"{self.ui_url}/api",
            "PREFECT_UI_URL": self.ui_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    def server_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)  # the server must not think it is a client of another one
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_API_HOST=self.host,
            PREFECT_SERVER_API_PORT=str(self.port),
            PREFECT_UI_API_URL=f"{self.ui_url}/api",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_LEVEL="WARNING",
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=self.lease_storage,
        )
        env.update(self.shared_env)
        if self.database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        if not self.migrate:
            env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] = "false"
        if self.auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        return env

    def start(self) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        database = self.home / "prefect.db"  # Prefect's SQLite default under PREFECT_HOME
        template = None if self.database_url or database.exists() else self.database_template
        first = template is not None and not template.exists()  # this server's migrations make the template
        if template is not None and not first:
            shutil.copyfile(template, database)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)],
            env=self.server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop the server in order
        )
        log.close()
        wait_until(
            self._health,
            done=bool,
            failed=self._exited,
            what=f"the Prefect server on {self.url} (log: {self.log_path})",
            timeout=self.startup_timeout,
            first_delay=0.25,
            max_delay=1.0,
        )
        if first and template is not None:  # up: migrated, and no caller has written to it yet
            keep_copy(database, template)
        return self

    def _health(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _exited(self, _: bool) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            return f"`prefect server start` exited with {self.process.returncode}:\n{tail}"
        return None

    def kill(self) -> None:
        """SIGKILL the server's whole process group: its machine lost, no shutdown of any kind."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
