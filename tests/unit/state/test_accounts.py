"""Users and organisations in the state database: a database made before them gains them (its
keys and usage rows kept), a key's holder is known to the key index, a user's org moves with it."""

from __future__ import annotations

import pytest

from mlx_fleet.router.http import usage
from mlx_fleet.state import accounts, db, keys


def test_a_database_from_before_accounts_gains_them_and_keeps_its_rows(tmp_path) -> None:
    conn = db.connect(db.db_path(tmp_path))
    db.ensure_schema(conn, keys.MIGRATIONS[:1] + usage.MIGRATIONS[:1])
    conn.execute("INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES ('key_old', 'old', 'h', 'chat', 1)")
    conn.execute("INSERT INTO usage (ts, key_id, endpoint, status, prompt_tokens, completion_tokens, cached_tokens, "
                 "latency_ms, stream) VALUES (1, 'key_old', 'chat', 200, 1, 1, 0, 1, 0)")
    db.ensure_schema(conn, keys.SCHEMA + usage.MIGRATIONS)
    [old] = keys.list_keys(conn)
    assert (old.id, old.user_id, old.org_id) == ("key_old", None, None)
    assert conn.execute("SELECT key_id, user_id, org_id FROM usage").fetchall() == [("key_old", None, None)]
    applied = {n for (n,) in conn.execute("SELECT name FROM schema_migrations")}
    assert {"accounts-1", "keys-2", "usage-2"} <= applied


def test_the_key_index_knows_a_keys_user_and_their_current_org(tmp_path) -> None:
    conn = keys.open_db(tmp_path)
    index = keys.KeyIndex(db.db_path(tmp_path))
    org = accounts.create_org(conn, "acme")
    user = accounts.create_user(conn, "ada", "ada@acme.test", org.id)
    key = keys.create_key(conn, "laptop", ["chat"], user.id)
    holder = index.holder(key.key)
    assert holder is not None and (holder.user_id, holder.org_id) == (user.id, org.id)
    accounts.change_user(conn, user.id, {"org_id": None})
    assert index.holder(key.key).org_id is None
    assert keys.delete_user(conn, user.id) == 1
    assert index.holder(key.key) is None
    with pytest.raises(accounts.UnknownUser):
        keys.delete_user(conn, user.id)


def test_names_and_emails_are_unique_and_an_org_with_users_stays(tmp_path) -> None:
    conn = keys.open_db(tmp_path)
    org = accounts.create_org(conn, "acme")
    with pytest.raises(accounts.NameTaken):
        accounts.create_org(conn, " acme ")
    accounts.create_user(conn, "ada", "ada@acme.test", org.id)
    with pytest.raises(accounts.NameTaken):
        accounts.create_user(conn, "ada 2", "ada@acme.test")
    with pytest.raises(accounts.OrgNotEmpty, match="still has users"):
        accounts.delete_org(conn, org.id)
    with pytest.raises(accounts.AccountProblem, match="needs a name"):
        accounts.create_user(conn, "  ")
