"""The catalog's choices that must survive a restart and a rescan: per-model overrides
(enabled, tier), the profiles made through the API and which profile is active. They live in the state database
(`mlx_fleet.state.db`), keyed by model id, so a model that vanishes and comes back keeps them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from mlx_fleet.state.db import connect, db_path, ensure_schema

MIGRATIONS = [
    ("catalog-1", """
CREATE TABLE catalog_overrides (
    model_id TEXT PRIMARY KEY,
    enabled INTEGER,
    tier TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE catalog_profiles (
    name TEXT PRIMARY KEY,
    models TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""),
    ("catalog-2", """
CREATE TABLE catalog_active_profile (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    config_profile TEXT,
    activated_at REAL NOT NULL
);
"""),
]


# (enabled, tier) chosen by the user for one model; None leaves the discovered value.
Override = tuple[bool | None, str | None]
# (the active profile, the config's `[catalog] profile` when it was activated)
ActiveProfile = tuple[str, str | None]


class CatalogStore:
    def __init__(self, state_dir: Path) -> None:
        self.conn: sqlite3.Connection = connect(db_path(state_dir))
        ensure_schema(self.conn, MIGRATIONS)

    def overrides(self) -> dict[str, Override]:
        rows = self.conn.execute("SELECT model_id, enabled, tier FROM catalog_overrides").fetchall()
        return {m: (None if e is None else bool(e), t) for m, e, t in rows}

    def set_enabled(self, model_id: str, enabled: bool) -> None:
        self._upsert(model_id, "enabled", int(enabled))

    def set_tier(self, model_id: str, tier: str) -> None:
        self._upsert(model_id, "tier", tier)

    def _upsert(self, model_id: str, column: str, value: object) -> None:
        self.conn.execute(
            f"INSERT INTO catalog_overrides (model_id, {column}, updated_at) VALUES (?, ?, ?) "
            f"ON CONFLICT(model_id) DO UPDATE SET {column} = excluded.{column}, updated_at = excluded.updated_at",
            (model_id, value, time.time()))

    def profiles(self) -> dict[str, list[str]]:
        rows = self.conn.execute("SELECT name, models FROM catalog_profiles ORDER BY name").fetchall()
        return {name: json.loads(models) for name, models in rows}

    def save_profile(self, name: str, models: list[str]) -> None:
        self.conn.execute(
            "INSERT INTO catalog_profiles (name, models, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET models = excluded.models", (name, json.dumps(models), time.time()))

    def delete_profile(self, name: str) -> bool:
        return self.conn.execute("DELETE FROM catalog_profiles WHERE name = ?", (name,)).rowcount > 0

    def active_profile(self) -> ActiveProfile | None:
        row = self.conn.execute("SELECT name, config_profile FROM catalog_active_profile").fetchone()
        return None if row is None else (row[0], row[1])

    def set_active_profile(self, name: str, config_profile: str | None) -> None:
        self.conn.execute(
            "INSERT INTO catalog_active_profile (id, name, config_profile, activated_at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = excluded.name, config_profile = excluded.config_profile, "
            "activated_at = excluded.activated_at", (name, config_profile, time.time()))

    def close(self) -> None:
        self.conn.close()
