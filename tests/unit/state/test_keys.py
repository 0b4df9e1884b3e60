"""API keys in the state database: hashed at rest, scoped, and revocations seen across connections."""

from __future__ import annotations

import pytest

from mlx_fleet.state import db, keys


def test_only_a_hash_is_stored(tmp_path) -> None:
    conn = keys.open_db(tmp_path)
    created = keys.create_key(conn, "alice", ["chat"])
    conn.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("fleet.sqlite3*"))
    assert created.key.encode() not in raw
    assert keys.token_hash(created.key).encode() in raw


def test_revocation_by_another_connection_is_seen_at_the_next_check(tmp_path) -> None:
    writer = keys.open_db(tmp_path)
    index = keys.KeyIndex(db.db_path(tmp_path))
    assert not index.live()
    created = keys.create_key(writer, "alice", ["embeddings"])
    holder = index.holder(created.key)
    assert holder is not None and holder.id == created.id and holder.scopes == {"embeddings"}
    assert index.holder("mf-not-a-key") is None
    keys.revoke_key(writer, created.id)
    assert index.holder(created.key) is None
    with pytest.raises(keys.UnknownKey):
        keys.revoke_key(writer, created.id)


def test_scopes_default_to_all_and_unknown_ones_are_refused(tmp_path) -> None:
    conn = keys.open_db(tmp_path)
    assert keys.create_key(conn, "all").scopes == list(keys.SCOPES)
    with pytest.raises(keys.KeyProblem, match="unknown scope 'admin'"):
        keys.create_key(conn, "x", ["admin"])
    with pytest.raises(keys.KeyProblem, match="at least one scope"):
        keys.create_key(conn, "x", [])


def test_list_filters_sorts_and_counts_uses(tmp_path) -> None:
    conn = keys.open_db(tmp_path)
    a, b = keys.create_key(conn, "alpha"), keys.create_key(conn, "beta")
    keys.count_uses(conn, {b.id: (3, 100.0)})
    keys.count_uses(conn, {b.id: (2, 50.0)})
    assert [k.name for k in keys.list_keys(conn, sort="-requests")] == ["beta", "alpha"]
    assert [k.id for k in keys.list_keys(conn, query="alp")] == [a.id]
    beta = keys.list_keys(conn, query="beta")[0]
    assert (beta.requests, beta.last_used_at) == (5, 100.0)
    with pytest.raises(keys.KeyProblem, match="cannot sort"):
        keys.list_keys(conn, sort="hash")
