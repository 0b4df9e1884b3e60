"""The state database: one SQLite file under the state directory for what must survive a restart
(API keys, usage records, the catalog's overrides and profiles).

Each feature owns its tables and their schema: it names its migrations and `ensure_schema` applies
the ones this database has not seen yet, in order, each in one transaction. Named steps rather than
one global version number let features grow their schemas independently, and an older server
refuses nothing it does not know about. WAL mode lets the router and the supervisor (two processes)
read while one of them writes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
DB_NAME = "fleet.sqlite3"
BUSY_TIMEOUT_MS = 5000


def db_path(state_dir: Path) -> Path:
    return state_dir.expanduser() / DB_NAME


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with a busy timeout, creating the file (0600) and its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    return conn


def ensure_schema(conn: sqlite3.Connection, migrations: Sequence[tuple[str, str]]) -> None:
    """Apply each `(name, sql script)` step not yet recorded, in order, each atomically.

    Two processes may start at once: the step is recorded inside its own transaction, and a
    `BEGIN IMMEDIATE` makes the second wait and then see it done.
    """
    for name, script in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (name,)).fetchone() is None:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (`executescript` would commit our transaction)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in migration: {current.strip()!r}")
    return out


def call(path: Path, fn: Callable[..., T], *args: object) -> T:
    """`fn(connection, *args)` on a connection of its own, opened and closed here: for a thread that
    answers one admin request (SQLite connections are not shared between threads here)."""
    conn = connect(path)
    try:
        return fn(conn, *args)
    finally:
        conn.close()
