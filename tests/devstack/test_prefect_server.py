"""devstack/prefect_server.py's copy of a server's database: what the next servers start from."""

import sqlite3
from contextlib import closing
from pathlib import Path

from devstack.prefect_server import free_port, keep_copy


def test_a_copy_of_a_live_database_holds_its_write_ahead_log_and_stands_alone(tmp_path: Path) -> None:
    database = tmp_path / "prefect.db"
    with closing(sqlite3.connect(database)) as server:  # Prefect's SQLite runs in WAL mode; still open, as a server's
        server.execute("PRAGMA journal_mode=WAL")
        server.execute("CREATE TABLE alembic_version (version_num TEXT)")
        server.execute("INSERT INTO alembic_version VALUES ('head')")
        server.commit()  # in the write-ahead log, not yet in the database file
        assert (tmp_path / "prefect.db-wal").stat().st_size > 0
        template = tmp_path / "cache" / "prefect-3.db"
        keep_copy(database, template)
    assert sorted(p.name for p in template.parent.iterdir()) == ["prefect-3.db"]  # one file, nothing half-made beside
    with closing(sqlite3.connect(template)) as copy:
        assert copy.execute("SELECT version_num FROM alembic_version").fetchall() == [("head",)]


def test_a_free_port_is_one_no_other_process_is_given_while_a_server_restarts() -> None:
    """A server of ours down for a restart (test_tier_lock's outage, the crash matrix's) keeps its port: another
    process's `bind(..., 0)` (Prefect's test servers pick their ports so) is given ports of the kernel's ephemeral
    range only, so a free port is one below it (seen: a test server took the port mid-outage, and the restarted
    server's clients reached that server instead)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= port < low for port in ports), ports
