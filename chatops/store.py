"""The bridge's memory (SQLite): message ids and their answers, plans, the runs it made and whether their
result was posted; and the audit file (one JSON line per request, never a secret)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PENDING = "pending"  # a message being handled right now (a redelivery that raced the first delivery)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    platform TEXT NOT NULL, message_id TEXT NOT NULL, received REAL NOT NULL, reply TEXT,
    PRIMARY KEY (platform, message_id));
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, platform TEXT NOT NULL, user TEXT NOT NULL,
    chat TEXT NOT NULL, command TEXT NOT NULL, deployment TEXT NOT NULL, parameters TEXT NOT NULL,
    created REAL NOT NULL, applied_run_id TEXT, desired INTEGER);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, platform TEXT NOT NULL, user TEXT NOT NULL, chat TEXT NOT NULL,
    reply_to TEXT, command TEXT NOT NULL, plan_id TEXT, created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, posted REAL, final_state TEXT);
"""


class PlanRow(BaseModel):
    plan_id: str
    run_id: str
    platform: str
    user: str
    chat: str
    command: dict[str, Any]
    deployment: str
    parameters: dict[str, Any]
    created: float
    applied_run_id: str | None = None
    desired: int | None = None  # a `set` plan: the tier's desired capacity when planned (apply refuses a change)


class RunRow(BaseModel):
    run_id: str
    platform: str
    user: str
    chat: str
    reply_to: str | None
    command: str
    plan_id: str | None
    created: float
    attempts: int
    posted: float | None
    final_state: str | None


class Store:
    def __init__(self, path: Path, message_ttl: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.message_ttl = message_ttl
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(SCHEMA)
        if "desired" not in {row["name"] for row in self._db.execute("PRAGMA table_info(plans)")}:
            self._db.execute("ALTER TABLE plans ADD COLUMN desired INTEGER")  # a store made before the column

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- message ids ---

    def remember(self, platform: str, message_id: str, now: float | None = None) -> dict[str, Any] | str | None:
        """None for a new message (now claimed); its stored answer for a redelivery; PENDING while in hand."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("DELETE FROM messages WHERE received < ?", (now - self.message_ttl,))
            try:
                self._db.execute(
                    "INSERT INTO messages (platform, message_id, received) VALUES (?, ?, ?)",
                    (platform, message_id, now),
                )
                return None
            except sqlite3.IntegrityError:
                row = self._db.execute(
                    "SELECT reply FROM messages WHERE platform = ? AND message_id = ?", (platform, message_id)
                ).fetchone()
        return PENDING if row is None or row["reply"] is None else json.loads(row["reply"])

    def answer(self, platform: str, message_id: str, reply: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE messages SET reply = ? WHERE platform = ? AND message_id = ?",
                (json.dumps(reply), platform, message_id),
            )

    def forget(self, platform: str, message_id: str) -> None:
        """The handling failed before any answer: a redelivery may try again."""
        with self._lock:
            self._db.execute(
                "DELETE FROM messages WHERE platform = ? AND message_id = ? AND reply IS NULL", (platform, message_id)
            )

    # --- plans ---

    def add_plan(self, plan: PlanRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO plans (plan_id, run_id, platform, user, chat, command, deployment, parameters,"
                " created, desired) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (plan.plan_id, plan.run_id, plan.platform, plan.user, plan.chat, json.dumps(plan.command),
                 plan.deployment, json.dumps(plan.parameters), plan.created, plan.desired),
            )  # fmt: skip

    def plan(self, plan_id: str) -> PlanRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        if row is None:
            return None
        data = dict(row)
        data["command"], data["parameters"] = json.loads(data["command"]), json.loads(data["parameters"])
        return PlanRow.model_validate(data)

    def mark_applied(self, plan_id: str, run_id: str) -> bool:
        """True if this call applied the plan (once only)."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE plans SET applied_run_id = ? WHERE plan_id = ? AND applied_run_id IS NULL", (run_id, plan_id)
            )
        return cursor.rowcount == 1

    def set_applied(self, plan_id: str, run_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE plans SET applied_run_id = ? WHERE plan_id = ?", (run_id, plan_id))

    def release_plan(self, plan_id: str, claim: str) -> None:
        """The apply made no run (busy, refused): the plan may be applied later."""
        with self._lock:
            self._db.execute(
                "UPDATE plans SET applied_run_id = NULL WHERE plan_id = ? AND applied_run_id = ?", (plan_id, claim)
            )

    # --- runs made, results posted ---

    def add_run(self, run: RunRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO runs (run_id, platform, user, chat, reply_to, command, plan_id, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, run.platform, run.user, run.chat, run.reply_to, run.command, run.plan_id, run.created),
            )

    def unposted(self) -> list[RunRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs WHERE posted IS NULL AND attempts < 5").fetchall()
        return [RunRow.model_validate(dict(r)) for r in rows]

    def run(self, run_id: str) -> RunRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else RunRow.model_validate(dict(row))

    def mark_posted(self, run_id: str, final_state: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET posted = ?, final_state = ? WHERE run_id = ?", (time.time(), final_state, run_id)
            )

    def mark_attempt(self, run_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET attempts = attempts + 1 WHERE run_id = ?", (run_id,))


class Audit:
    """One JSON line per request: when, platform, chat, user, client address, text, decision, run id."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}, ensure_ascii=False)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
