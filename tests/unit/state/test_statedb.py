"""The state database: named migrations apply once, in order, atomically, across connections."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from mlx_fleet.state.db import connect, db_path, ensure_schema

STEPS = [
    ("t-1", "CREATE TABLE t (a INTEGER);"),
    ("t-2", "ALTER TABLE t ADD COLUMN b TEXT;\nCREATE INDEX t_b ON t (b);"),
]


def test_migrations_apply_once_and_survive_reopen(tmp_path):
    path = db_path(tmp_path)
    conn = connect(path)
    ensure_schema(conn, STEPS)
    conn.execute("INSERT INTO t (a, b) VALUES (1, 'x')")
    conn.close()
    again = connect(path)
    ensure_schema(again, STEPS)  # a second run must not re-create the table
    assert again.execute("SELECT a, b FROM t").fetchall() == [(1, "x")]
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failing_step_leaves_nothing_behind(tmp_path):
    conn = connect(db_path(tmp_path))
    with pytest.raises(sqlite3.OperationalError):
        ensure_schema(conn, [("bad", "CREATE TABLE u (a INTEGER);\nINSERT INTO nowhere VALUES (1);")])
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'u'").fetchone() is None
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == 0


def test_two_connections_share_one_schema(tmp_path):
    a, b = connect(db_path(tmp_path)), connect(db_path(tmp_path))
    ensure_schema(a, STEPS[:1])
    ensure_schema(b, STEPS)
    a.execute("INSERT INTO t (a, b) VALUES (2, 'y')")
    assert b.execute("SELECT b FROM t").fetchall() == [("y",)]
