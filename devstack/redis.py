"""A throwaway Redis from the Debian package, for the multi-server rehearsal: what several Prefect servers share.

`redis-server` in a temporary directory (under `parent`: the rehearsal's folder) on a free port of 127.0.0.1,
with a password and no persistence (a rehearsal's Redis lives as long as the rehearsal); `stop()` shuts it down
and removes the directory. Installed with `apt-get install redis-server` when missing and we are root (as the
Makefile installs Debian's chromium).

`prefect_settings()` is what every Prefect server process of a multi-server setup needs (Prefect's "scale
self-hosted Prefect" guide, checked against the installed prefect 3.8.8 and prefect-redis): events and the
cache through Redis streams, causal ordering and concurrency leases (the tier locks) in Redis, and the background
services' Docket on Redis, so two servers' services share their work instead of each running it alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from devstack.prefect_server import free_port
from devstack.throwaway import Throwaway
from tasks.waiters import wait_until

PACKAGE = "redis-server"
REDIS_LEASES = "prefect_redis.lease_storage"
MESSAGING_DB, DOCKET_DB = 0, 1  # Prefect's guide: the Docket may share the instance, on another database


def install_with_apt() -> None:
    """`apt-get install redis-server` (root only); Debian's package starts no service where systemd is absent."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"Redis is not installed: install {PACKAGE} (Debian/Ubuntu: apt-get install {PACKAGE})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", PACKAGE], check=True, env=env)


class LocalRedis(Throwaway):
    """A redis-server child on 127.0.0.1 with a password; `.url(db)` is what redis clients take."""

    def __init__(self, parent: Path | None = None, install: bool = True) -> None:
        self.parent, self.install = parent, install
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.version = ""

    def url(self, db: int = MESSAGING_DB) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "redis.log"

    def prefect_settings(self) -> dict[str, str]:
        """The environment every Prefect server process of a multi-server setup gets (never the clients')."""
        return {
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": REDIS_LEASES,
            "PREFECT_REDIS_MESSAGING_URL": self.url(MESSAGING_DB),
            "PREFECT_SERVER_DOCKET_URL": self.url(DOCKET_DB),
        }

    def start(self) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None and self.install:
            install_with_apt()
            binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"Redis is not installed (apt-get install {PACKAGE})")
        answer = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
        self.version = next((w.removeprefix("v=") for w in answer.split() if w.startswith("v=")), answer.strip())
        if self.parent:
            self.parent.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix="tcscale-redis-", dir=self.parent))
        config = self.directory / "redis.conf"  # the password in a file only we can read, not on a command line
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\nrequirepass {self.password}\n"
            'save ""\nappendonly no\ndaemonize no\n'
        )
        config.chmod(0o600)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        wait_until(self._ping, done=bool, failed=self._exited, what=f"redis-server on 127.0.0.1:{self.port}",
                   timeout=30, first_delay=0.1, max_delay=0.5)  # fmt: skip
        return self

    def _ping(self) -> bool:
        import redis

        try:
            with redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _exited(self, _: bool) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            return f"redis-server exited with {self.process.returncode}: {self.log_path.read_text()[-1500:]}"
        return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
