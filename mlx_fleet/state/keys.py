"""API keys with scopes, kept in the state database: only a hash of each token is stored.

The router checks a key on every `/v1` request without touching the disk: `KeyIndex` holds the
live keys in memory, by hash, and asks SQLite's `PRAGMA data_version` (a counter in the WAL's
shared memory, which changes when another connection commits) whether to reload them. So a key
revoked by another process (`mlx-fleet keys revoke`) is refused from the next request on.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Literal, get_args

import msgspec

from mlx_fleet.state import accounts, db
from mlx_fleet.config import ServerConfig, is_loopback

Scope = Literal["chat", "completions", "embeddings", "responses", "messages"]
SCOPES: tuple[str, ...] = get_args(Scope)
TOKEN_PREFIX = "mf-"

MIGRATIONS = [
    ("keys-1", """
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    last_used_at REAL,
    requests INTEGER NOT NULL DEFAULT 0
);
"""),
    # the user a key belongs to (no foreign key: a revoked key keeps naming its deleted user)
    ("keys-2", "ALTER TABLE api_keys ADD COLUMN user_id TEXT;"),
]
# what the key functions need: the keys' tables and the users' they join
SCHEMA = accounts.MIGRATIONS + MIGRATIONS


class ApiKey(msgspec.Struct, kw_only=True):
    """A key as the admin API shows it: never its token."""

    id: str
    name: str
    scopes: list[str]
    created_at: float
    user_id: str | None = None
    org_id: str | None = None
    last_used_at: float | None = None
    requests: int = 0


class CreatedKey(ApiKey, kw_only=True):
    """The answer to a create: the only time the token is shown."""

    key: str


class KeyProblem(ValueError):
    """A create, list or revoke that cannot be done, worded for the caller."""


class UnknownKey(KeyProblem):
    pass


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_db(state_dir: Path) -> sqlite3.Connection:
    conn = db.connect(db.db_path(state_dir))
    db.ensure_schema(conn, SCHEMA)
    return conn


def check_scopes(scopes: list[str] | None) -> list[str]:
    """Scopes omitted mean every `/v1` scope; an unknown one is an error naming it."""
    if scopes is None:
        return list(SCOPES)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise KeyProblem(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise KeyProblem("a key needs at least one scope")
    return sorted(set(scopes), key=SCOPES.index)


def create_key(conn: sqlite3.Connection, name: str, scopes: list[str] | None = None,
               user_id: str | None = None) -> CreatedKey:
    """A new key, for `user_id` where given (an unknown user is `accounts.UnknownUser`)."""
    if not name.strip():
        raise KeyProblem("a key needs a name")
    scopes = check_scopes(scopes)
    org_id = accounts.get_user(conn, user_id).org_id if user_id is not None else None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = CreatedKey(id="key_" + os.urandom(6).hex(), name=name.strip(), scopes=scopes, created_at=time.time(),
                     user_id=user_id, org_id=org_id, key=token)
    conn.execute("INSERT INTO api_keys (id, name, hash, scopes, created_at, user_id) VALUES (?, ?, ?, ?, ?, ?)",
                 (key.id, key.name, token_hash(token), ",".join(scopes), key.created_at, user_id))
    return key


_SORTS = {"name": "k.name", "created_at": "k.created_at", "last_used_at": "k.last_used_at", "requests": "k.requests"}


def list_keys(conn: sqlite3.Connection, query: str = "", sort: str = "created_at", user_id: str | None = None,
              org_id: str | None = None) -> list[ApiKey]:
    """Live keys; `query` matches the name or id, `sort` is a field name, `-field` descending;
    `user_id` and `org_id` keep the keys of that user, or of that organisation's users."""
    column = _SORTS.get(sort.lstrip("-"))
    if column is None:
        raise KeyProblem(f"cannot sort by {sort!r}; choose one of {', '.join(_SORTS)} (prefix '-' to reverse)")
    order = "DESC" if sort.startswith("-") else "ASC"
    rows = conn.execute(
        f"SELECT k.id, k.name, k.scopes, k.created_at, k.user_id, u.org_id, k.last_used_at, k.requests "
        f"FROM api_keys k LEFT JOIN users u ON u.id = k.user_id WHERE k.revoked_at IS NULL "
        f"AND (k.name LIKE ?1 OR k.id LIKE ?1) AND (?2 IS NULL OR k.user_id = ?2) AND (?3 IS NULL OR u.org_id = ?3) "
        f"ORDER BY {column} {order}, k.id", (f"%{query}%", user_id, org_id)).fetchall()
    return [ApiKey(id=r[0], name=r[1], scopes=r[2].split(","), created_at=r[3], user_id=r[4], org_id=r[5],
                   last_used_at=r[6], requests=r[7]) for r in rows]


def revoke_key(conn: sqlite3.Connection, key_id: str) -> None:
    done = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                        (time.time(), key_id)).rowcount
    if not done:
        raise UnknownKey(f"no live key with id {key_id!r}")


def delete_user(conn: sqlite3.Connection, user_id: str) -> int:
    """Delete a user and revoke their keys, in one transaction (the keys are refused from the next
    request on, as any revoked key); how many keys were revoked."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        accounts.delete_user_row(conn, user_id)
        revoked = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                               (time.time(), user_id)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return revoked


def count_uses(conn: sqlite3.Connection, uses: dict[str, tuple[int, float]]) -> None:
    """Add `{key id: (requests, last used)}` to the keys' counters (inside the caller's transaction)."""
    conn.executemany("UPDATE api_keys SET requests = requests + ?, last_used_at = max(coalesce(last_used_at, 0), ?) "
                     "WHERE id = ?", [(n, last, key_id) for key_id, (n, last) in uses.items()])


def live_key_count(state_dir: Path) -> int:
    """How many live keys the state database holds; 0 when it or its key table does not exist yet
    (nothing is created: a server that refuses to start leaves no file behind)."""
    path = db.db_path(state_dir)
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=db.BUSY_TIMEOUT_MS / 1000)
    try:
        return conn.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()[0]
    except sqlite3.OperationalError:  # no such table: no key was ever made
        return 0
    finally:
        conn.close()


def exposure_problem(server: ServerConfig) -> str | None:
    """Why the server must not start where it is bound, or None.

    Beyond loopback some key must guard it: a config key, the admin key (with which keys can be
    made through the admin API; `/v1` refuses every request until then) or a live key in the
    state database (`mlx-fleet keys create`). Checked at `serve`, not when the config is read,
    so that `mlx-fleet keys --config` works on a config that needs its first key.
    """
    if is_loopback(server.host) or server.api_keys or server.admin_key:
        return None
    state_dir = Path(server.state_dir).expanduser()
    if live_key_count(state_dir):
        return None
    return (f"server.host: binding to {server.host!r} exposes the server beyond this machine, and no key guards "
            f"it: set server.api_keys (and server.admin_key), or make a key first with `mlx-fleet keys create "
            f"NAME --state-dir {state_dir}` (its state database holds no live key)")


class Holder(msgspec.Struct, frozen=True):
    """Who a live key belongs to, as the guard needs it."""

    id: str
    scopes: frozenset[str]
    user_id: str | None = None
    org_id: str | None = None


class KeyIndex:
    """The live keys by token hash, in memory, reloaded only when the database has changed.

    Its connection, opened on first use (once the tables exist), is used from one thread only (the
    router's event loop).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self._version = -1
        self._holders: dict[str, Holder] = {}

    def load(self) -> None:
        """Open and read now (at startup), so that the first request does not."""
        self.live()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def live(self) -> dict[str, Holder]:
        """The live keys by hash, re-read only when another connection wrote (one cheap pragma)."""
        if self.conn is None:
            self.conn = db.connect(self.path)
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            rows = self.conn.execute("SELECT k.hash, k.id, k.scopes, k.user_id, u.org_id FROM api_keys k "
                                     "LEFT JOIN users u ON u.id = k.user_id WHERE k.revoked_at IS NULL").fetchall()
            self._holders = {h: Holder(i, frozenset(s.split(",")), user, org) for h, i, s, user, org in rows}
            self._version = version
        return self._holders

    def holder(self, token: str) -> Holder | None:
        return self.live().get(token_hash(token))
