"""Organisations and users, kept in the state database beside the keys: who holds a key.

A user may belong to an organisation; a key may belong to a user (`keys.py`), and each usage row
records the key's user and organisation as they were when the request was made. An organisation
that still has users cannot be deleted; deleting a user revokes their keys (`keys.delete_user`).
"""

from __future__ import annotations

import os
import sqlite3
import time

import msgspec

MIGRATIONS = [
    ("accounts-1", """
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT REFERENCES orgs (id),
    name TEXT NOT NULL,
    email TEXT UNIQUE,
    created_at REAL NOT NULL
);
CREATE INDEX users_org ON users (org_id);
"""),
]


class Org(msgspec.Struct, kw_only=True):
    id: str
    name: str
    created_at: float


class User(msgspec.Struct, kw_only=True):
    id: str
    org_id: str | None
    name: str
    email: str | None
    created_at: float


class AccountProblem(ValueError):
    """A create, change or delete that cannot be done, worded for the caller."""


class UnknownOrg(AccountProblem):
    pass


class UnknownUser(AccountProblem):
    pass


class OrgNotEmpty(AccountProblem):
    pass


class NameTaken(AccountProblem):
    pass


_ORG_COLUMNS = "id, name, created_at"
_USER_COLUMNS = "id, org_id, name, email, created_at"


def _name(name: str, what: str) -> str:
    if not name.strip():
        raise AccountProblem(f"{what} needs a name")
    return name.strip()


def _unique(conn: sqlite3.Connection, sql: str, params: tuple, taken: str) -> None:
    """Run a write that a UNIQUE column may refuse, the refusal worded for the caller."""
    try:
        conn.execute(sql, params)
    except sqlite3.IntegrityError:
        raise NameTaken(taken) from None


def create_org(conn: sqlite3.Connection, name: str) -> Org:
    org = Org(id="org_" + os.urandom(6).hex(), name=_name(name, "an organisation"), created_at=time.time())
    _unique(conn, "INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)", (org.id, org.name, org.created_at),
            f"an organisation named {org.name!r} exists already")
    return org


def list_orgs(conn: sqlite3.Connection) -> list[Org]:
    return [Org(id=i, name=n, created_at=c)
            for i, n, c in conn.execute(f"SELECT {_ORG_COLUMNS} FROM orgs ORDER BY created_at, id")]


def get_org(conn: sqlite3.Connection, org_id: str) -> Org:
    row = conn.execute(f"SELECT {_ORG_COLUMNS} FROM orgs WHERE id = ?", (org_id,)).fetchone()
    if row is None:
        raise UnknownOrg(f"no organisation with id {org_id!r}")
    return Org(id=row[0], name=row[1], created_at=row[2])


def find_org(conn: sqlite3.Connection, name: str) -> Org:
    row = conn.execute(f"SELECT {_ORG_COLUMNS} FROM orgs WHERE name = ?", (name.strip(),)).fetchone()
    if row is None:
        raise UnknownOrg(f"no organisation named {name!r}")
    return Org(id=row[0], name=row[1], created_at=row[2])


def rename_org(conn: sqlite3.Connection, org_id: str, name: str) -> Org:
    org = get_org(conn, org_id)
    org.name = _name(name, "an organisation")
    _unique(conn, "UPDATE orgs SET name = ? WHERE id = ?", (org.name, org_id),
            f"an organisation named {org.name!r} exists already")
    return org


def delete_org(conn: sqlite3.Connection, org_id: str) -> None:
    get_org(conn, org_id)
    members = conn.execute("SELECT count(*) FROM users WHERE org_id = ?", (org_id,)).fetchone()[0]
    refusal = OrgNotEmpty(f"organisation {org_id!r} still has users: delete or move them first")
    if members:
        raise refusal
    try:
        conn.execute("DELETE FROM orgs WHERE id = ?", (org_id,))
    except sqlite3.IntegrityError:  # a user joined it since the count (the users' foreign key)
        raise refusal from None


def _user(row: tuple) -> User:
    return User(**dict(zip(("id", "org_id", "name", "email", "created_at"), row)))


def create_user(conn: sqlite3.Connection, name: str, email: str | None = None, org_id: str | None = None) -> User:
    if org_id is not None:
        get_org(conn, org_id)
    user = User(id="user_" + os.urandom(6).hex(), org_id=org_id, name=_name(name, "a user"),
                email=email.strip() if email else None, created_at=time.time())
    _unique(conn, f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?)", msgspec.structs.astuple(user),
            f"a user with email {user.email!r} exists already")
    return user


def list_users(conn: sqlite3.Connection, org_id: str | None = None) -> list[User]:
    where, params = (" WHERE org_id = ?", (org_id,)) if org_id is not None else ("", ())
    return [_user(r) for r in conn.execute(f"SELECT {_USER_COLUMNS} FROM users{where} ORDER BY created_at, id",
                                           params)]


def get_user(conn: sqlite3.Connection, user_id: str) -> User:
    row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise UnknownUser(f"no user with id {user_id!r}")
    return _user(row)


def find_user(conn: sqlite3.Connection, email: str | None = None, name: str | None = None) -> User:
    """By email (unique) or, failing that, by name (the first made, where several share it)."""
    if email is None and name is None:
        raise AccountProblem("look a user up by email or by name")
    column, value = ("email", email) if email is not None else ("name", name)
    row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE {column} = ? ORDER BY created_at, id LIMIT 1",
                       ((value or "").strip(),)).fetchone()
    if row is None:
        raise UnknownUser(f"no user with {column} {value!r}")
    return _user(row)


def change_user(conn: sqlite3.Connection, user_id: str, changes: dict[str, str | None]) -> User:
    """Set the given fields (`name`, `email`, `org_id`; an `org_id` or `email` of None clears it)."""
    user = get_user(conn, user_id)
    if "name" in changes:
        user.name = _name(changes["name"] or "", "a user")
    if "email" in changes:
        user.email = (changes["email"] or "").strip() or None
    if "org_id" in changes:
        if changes["org_id"] is not None:
            get_org(conn, changes["org_id"])
        user.org_id = changes["org_id"]
    _unique(conn, "UPDATE users SET name = ?, email = ?, org_id = ? WHERE id = ?",
            (user.name, user.email, user.org_id, user_id), f"a user with email {user.email!r} exists already")
    return user


def delete_user_row(conn: sqlite3.Connection, user_id: str) -> None:
    """The user's row only: `keys.delete_user` revokes their keys with it, in one transaction."""
    get_user(conn, user_id)
    conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
