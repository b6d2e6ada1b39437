"""No secret is kept by Prefect nor printed: after full runs that logged in with an SSH key (`scale-out-cluster`, the
Linux business server) and with a Windows password (`scale-out-session-tier`, an IIS business server), both from
Prefect Secret blocks, and called the cloud with the sandbox's SecretKey, none of them is in

- the Prefect database (the harness's SQLite file): every row of every table (flow and task run parameters,
  states and results, logs, artifacts, events, variables...), and the file's raw bytes (free pages too);
  block documents are stored encrypted, so every block other than the Secret blocks is read back decrypted;
- any file under PREFECT_HOME and the results storage (PREFECT_LOCAL_STORAGE_PATH): Prefect persists a task's
  result there when results persist by default or the task has a cache policy, and a failed run's exception
  (pickled, base64): base64 anywhere is decoded and searched too;
- the runs' output: every log record (DEBUG up, any logger: what Prefect's console shows and sends to its API,
  with the records' arguments) and whatever reached stdout and stderr.
"""

import base64
import contextlib
import logging
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_HOME,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_SERVER_DATABASE_CONNECTION_URL,
)

from flows.scale_out import scale_out_cluster, scale_out_session_tier
from tasks.ssh_keys import load_private_key
from tests.flows.support import cluster_params
from tests.flows.test_windows import launch_iis_business_server, session_params


def secret_needles(key_text: str, password: str, secret_key: str) -> dict[str, str]:
    """What must appear nowhere: each secret whole, every line of the key's body, and overlapping 40-character
    pieces of the body (found even when re-wrapped), less what the public key shares with it."""
    public = load_private_key(key_text).get_base64()
    body = [line.strip() for line in key_text.splitlines() if line.strip() and not line.startswith("-----")]
    joined = "".join(body)
    needles = {"the private key": key_text.strip(), "the password": password, "the sandbox SecretKey": secret_key}
    for n, line in enumerate(body):
        if len(line) >= 16 and line not in public:
            needles[f"line {n + 2} of the private key"] = line
    for start in range(0, len(joined) - 40, 20):
        piece = joined[start : start + 40]
        if piece not in public:
            needles[f"characters {start}-{start + 40} of the private key's body"] = piece
    return needles


def found(text: str, needles: dict[str, str]) -> list[str]:
    """The needles in `text`, or in what its base64 runs decode to (Prefect keeps a failed run's exception as
    base64 of its pickle, in its results storage)."""
    text += decoded(text)
    return [what for what, needle in needles.items() if needle in text]


# One character class (escaped line breaks made real first): ~3x faster than an alternation over megabytes of database.
BASE64_RUN = re.compile(r"[A-Za-z0-9+/\r\n]{60,}={0,2}")


def decoded(text: str) -> str:
    """Every run of base64 in `text` (line breaks, escaped or not, allowed), decoded at each of the 4 alignments."""
    pieces = []
    for run in BASE64_RUN.findall(text.replace("\\n", "\n")):
        compact = run.replace("\r", "").replace("\n", "")
        for skip in range(4):
            usable = compact[skip:]
            usable = usable[: len(usable) // 4 * 4]
            with contextlib.suppress(ValueError):
                pieces.append(base64.b64decode(usable).decode("latin-1"))
    return "\n".join(pieces)


def database_path() -> Path:
    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    assert url and url.startswith("sqlite"), f"the harness runs on SQLite, not {url}"
    return Path(url.split(":///", 1)[1])


def database_rows(path: Path) -> Iterator[tuple[str, str]]:
    """(table.column, text) of every non-empty value of every table."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            columns = [c[0] for c in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes):
                        yield f"{table}.{column}", value.decode("utf-8", "replace")
                    elif isinstance(value, str) and value:
                        yield f"{table}.{column}", value


def files_under(*folders: Path) -> Iterator[Path]:
    for folder in folders:
        if folder.is_dir():
            yield from (p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def windows_server(guide: dict[str, Any], cloud_env: Any, tmp_path: Path) -> tuple[dict[str, Any], str]:
    password = f"Tc{uuid.uuid4().hex[:12]}-Q9!"  # this test's own: the scan is not confused by other tests
    return launch_iis_business_server(guide, cloud_env, password, tmp_path / "administrator.txt"), password


def test_full_runs_leave_no_secret_in_prefect_nor_in_their_output(guide, cloud_env, windows_server, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    windows, password = windows_server
    key_text = Path(guide["key_pair"]["private_key_file"]).read_text()
    tag = uuid.uuid4().hex[:8]
    key_block, password_block = f"tcscale-test-key-{tag}", f"tcscale-test-password-{tag}"
    Secret(value=key_text).save(key_block)
    Secret(value=password).save(password_block)
    needles = secret_needles(key_text, password, cloud_env.cloud.config.secret_key)

    # The guide's cluster, logging in to the Linux business server with the key from its Secret block.
    cluster = cluster_params(guide, count=1)
    keyed = {"key_file": None, "key_secret_block": key_block}
    cluster.session.ssh = cluster.session.ssh.model_copy(update=keyed)
    cluster.business.ssh = cluster.business.ssh.model_copy(update=keyed)
    session, _ = scale_out_cluster(cluster)
    assert session.changes and all(change.applied for change in session.changes)
    # The IIS business server: Administrator's password from its Secret block.
    outcome = scale_out_session_tier(session_params(guide, windows, password_block))
    (change,) = outcome.changes
    assert change.applied and change.instance_id == windows["instance_id"]

    texts = kept_by_prefect() + printed(capfd, caplog)
    leaks = sorted({f"{what} in {where}" for where, text in texts for what in found(text, needles)})
    assert not leaks, "secrets kept or printed:\n" + "\n".join(leaks)
    # The scan read what it claims: the runs' parameters (the blocks' names), their logs, their output.
    for name in (key_block, password_block, windows["instance_id"]):
        assert any(name in text for where, text in texts if where.startswith("flow_run.parameters")), name
    assert any(where == "log.message" for where, _ in texts)
    assert any(where == "logs" and "Finished in state Completed" in text for where, text in texts)


def kept_by_prefect() -> list[tuple[str, str]]:
    """(where, text) of everything Prefect keeps: the database, decrypted non-Secret blocks, files."""
    APILogWorker.drain_all()  # every log the runs sent is in the database before it is read
    EventsWorker.drain_all()
    texts = list(database_rows(path := database_path()))
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-journal")):
        if file.exists():  # byte for byte: free pages too
            texts.append((file.name, file.read_bytes().decode("latin-1")))
    with get_client(sync_client=True) as client:  # block documents are stored encrypted: read them decrypted
        for block in client.read_block_documents(include_secrets=True):
            if not (block.block_type and block.block_type.slug == "secret"):
                texts.append((f"block {block.name}", str(block.data)))
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser()  # persisted results, if any
    for file in files_under(Path(PREFECT_HOME.value()).expanduser(), storage):
        texts.append((str(file), file.read_bytes().decode("latin-1")))
    return texts


def printed(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(where, text) of the runs' output: stdout, stderr, and every log record with its arguments."""
    out, err = capfd.readouterr()
    texts = [("stdout", out), ("stderr", err), ("logs", caplog.text)]
    for record in caplog.records:
        texts.append((f"a log record of {record.name}", f"{record.getMessage()} {record.exc_text} {record.__dict__}"))
    return texts
