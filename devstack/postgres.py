"""A throwaway PostgreSQL cluster from the Debian package, for the multi-machine rehearsal.

`initdb` into a temporary directory, `pg_ctl start` on a free port of 127.0.0.1 (password auth over TCP),
one database for Prefect; `stop()` shuts the cluster down and removes the directory. PostgreSQL refuses
to run as root, so as root every server-side command runs as the `postgres` user (`runuser`).
Prefect's migrations create the `pg_trgm` extension themselves (postgresql-contrib ships it).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from devstack.prefect_server import free_port
from devstack.throwaway import Throwaway

MIN_VERSION = (14, 9)  # what Prefect 3.8 supports
PACKAGES = ["postgresql", "postgresql-contrib"]


def find_bindir() -> Path | None:
    """The newest installed /usr/lib/postgresql/<major>/bin (Debian's layout), or None."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return candidates[-1].parent if candidates else None


def install_with_apt() -> None:
    """`apt-get install postgresql postgresql-contrib` (root only): the Debian package the rehearsal relies on."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"PostgreSQL is not installed: install {' '.join(PACKAGES)} (Debian/Ubuntu) and retry")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], check=True, env=env)


def server_version(bindir: Path) -> tuple[int, int]:
    answer = subprocess.run([bindir / "postgres", "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+)\.(\d+)", answer)
    if not found:
        raise RuntimeError(f"cannot read PostgreSQL's version from {answer!r}")
    return int(found[1]), int(found[2])


class LocalPostgres(Throwaway):
    """A PostgreSQL cluster in a temporary directory: `.database_url` is what Prefect's server takes."""

    def __init__(self, user: str = "tcscale", database: str = "prefect", install: bool = True) -> None:
        self.user, self.database, self.install = user, database, install
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.directory: Path | None = None
        self.bindir: Path | None = None
        self.version: tuple[int, int] | None = None

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "postgres.log"

    def _as_owner(self, *args: str | Path) -> list[str]:
        """Run a server-side command as the cluster's owner: `postgres` when we are root."""
        command = [str(a) for a in args]
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def start(self) -> LocalPostgres:
        self.bindir = find_bindir()
        if self.bindir is None and self.install:
            install_with_apt()
            self.bindir = find_bindir()
        if self.bindir is None:
            raise RuntimeError(f"PostgreSQL is not installed (apt-get install {' '.join(PACKAGES)})")
        self.version = server_version(self.bindir)
        if self.version < MIN_VERSION:
            raise RuntimeError(
                f"PostgreSQL {self.version} is older than {MIN_VERSION}, the oldest Prefect 3.8 supports"
            )
        extension = Path(f"/usr/share/postgresql/{self.bindir.parent.name}/extension/pg_trgm.control")
        if not extension.exists():
            raise RuntimeError(f"pg_trgm is missing ({extension}): apt-get install postgresql-contrib")

        self.directory = Path(tempfile.mkdtemp(prefix="tcscale-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        data = self.directory / "data"
        subprocess.run(
            self._as_owner(
                self.bindir / "initdb",
                "-D",
                data,
                "-U",
                self.user,
                "--pwfile",
                password_file,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
            ),
            check=True,
            capture_output=True,
        )
        password_file.unlink()
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        # `pg_ctl -w` waits until the server accepts connections (its own readiness poll).
        subprocess.run(
            self._as_owner(self.bindir / "pg_ctl", "-D", data, "-l", self.log_path, "-o", options, "-w", "start"),
            check=True,
            capture_output=True,
        )
        env = {**os.environ, "PGPASSWORD": self.password}
        subprocess.run(
            [self.bindir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database],
            check=True,
            capture_output=True,
            env=env,
        )
        return self

    def stop(self) -> None:
        if self.directory is None or self.bindir is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                self._as_owner(self.bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
