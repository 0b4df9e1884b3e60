"""The catalog: configured models merged with discovered ones, the user's overrides applied.

A configured model (`[[models]]`) wins over a discovered one with the same id and brings its
aliases, TTL and defaults; discovered models whose ids repeat get a suffix. Overrides (enabled,
tier) and API-made profiles are kept in the state database by model id, so they survive a
rescan and a restart. The catalog decides nothing about memory: the supervisor serves any
enabled entry as it serves a configured model.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from mlx_fleet.catalog.discover import GGUF_SUFFIX, discover, unique_ids
from mlx_fleet.catalog.entry import TIERS, ModelEntry, ModelFacts, Profile, RegistryListing, ScanResult
from mlx_fleet.catalog.inspect import NotAModel, describe_dir, describe_gguf
from mlx_fleet.catalog.store import CatalogStore
from mlx_fleet.catalog.tiers import tier_for
from mlx_fleet.config import FleetConfig, ModelConfig
from mlx_fleet.model_types import hf_cache_snapshot

log = logging.getLogger("mlx_fleet.catalog")

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CatalogError(Exception):
    """A registry request that cannot be done; `status` and `code` go to the client as they are."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Catalog:
    def __init__(self, config: FleetConfig, store: CatalogStore | None = None) -> None:
        self.config = config
        self.store = store
        low, high = config.catalog.tier_thresholds
        self.thresholds = (int(low), int(high))
        self.configured: dict[str, ModelConfig] = {m.id: m for m in config.models}
        self.entries: dict[str, ModelEntry] = {}
        self.names: dict[str, str] = {}  # every id and alias -> the entry's id
        self.last_scan: float | None = None
        self.active_profile: str | None = None

    # -- building -------------------------------------------------------------------------------

    def rescan(self) -> ScanResult:
        """Look at the disk again; ids found before and now keep their overrides."""
        before = set(self.entries)
        catalog = self.config.catalog
        found = discover(catalog.scan, catalog.max_depth, catalog.hf_cache)
        entries = [self._configured_entry(m) for m in self.config.models]
        aliases = {a for m in self.config.models for a in m.aliases}
        entries += unique_ids([e for e in found if e.id not in self.configured], taken=aliases)
        overrides = self.store.overrides() if self.store else {}
        for entry in entries:
            entry.tier = tier_for(entry.parameters, entry.size_bytes,
                                  entry.quantization.bits if entry.quantization else None,
                                  entry.thinking, self.thresholds)
            enabled, tier = overrides.get(entry.id, (None, None))
            entry.enabled = entry.enabled if enabled is None else enabled
            entry.tier = tier if tier in TIERS else entry.tier
        self.entries = {e.id: e for e in entries}
        self.names = {name: e.id for e in entries for name in (e.id, *e.aliases)}
        self.last_scan = time.time()
        added, removed = sorted(self.entries.keys() - before), sorted(before - self.entries.keys())
        return ScanResult(models_found=len(found), models_added=len(added), models_removed=len(removed),
                          added=added, removed=removed, timestamp=self.last_scan)

    def _configured_entry(self, model: ModelConfig) -> ModelEntry:
        facts = _facts(model.path)
        facts.type = model.type if model.type != "auto" else facts.type
        entry = ModelEntry.from_facts(model.id, model.path, "config", facts)
        entry.aliases = list(model.aliases)
        return entry

    # -- reading --------------------------------------------------------------------------------

    def get(self, name: str) -> ModelEntry | None:
        """The entry a client's model name (id or alias) means, enabled or not."""
        model_id = self.names.get(name)
        return None if model_id is None else self.entries.get(model_id)

    def enabled(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.enabled]

    def tier(self, tier: str) -> list[ModelEntry]:
        """The enabled models of a tier, smallest first (the one to load when none is loaded)."""
        if tier not in TIERS:
            raise CatalogError(404, "tier_not_found", f"There is no tier {tier!r}; tiers are {', '.join(TIERS)}.")
        members = [e for e in self.enabled() if e.tier == tier]
        return sorted(members, key=lambda e: (e.parameters or e.size_bytes, e.id))

    def model_config(self, entry: ModelEntry) -> ModelConfig:
        """How the supervisor serves an entry: a configured model as configured, else its defaults."""
        configured = self.configured.get(entry.id)
        if configured is not None:
            return configured
        return ModelConfig(id=entry.id, path=entry.path, type=entry.type)  # type: ignore[arg-type]

    def registry(self, tier: str | None = None) -> RegistryListing:
        """Every model, or with a tier, that tier's enabled models, smallest first."""
        return RegistryListing(models=list(self.entries.values()) if tier is None else self.tier(tier),
                        scan_paths=[str(Path(p).expanduser()) for p in self.config.catalog.scan],
                        hf_cache=self.config.catalog.hf_cache, last_scan=self.last_scan,
                        active_profile=self.active_profile)

    # -- the user's choices ---------------------------------------------------------------------

    def set_enabled(self, model_id: str, enabled: bool) -> ModelEntry:
        entry = self.require(model_id)
        entry.enabled = enabled
        if self.store:
            self.store.set_enabled(entry.id, enabled)
        return entry

    def set_tier(self, model_id: str, tier: str) -> ModelEntry:
        entry = self.require(model_id)
        if tier not in TIERS:
            raise CatalogError(400, "invalid_tier", f"{tier!r} is not a tier; tiers are {', '.join(TIERS)}.")
        entry.tier = tier  # type: ignore[assignment]
        if self.store:
            self.store.set_tier(entry.id, tier)
        return entry

    def require(self, model_id: str) -> ModelEntry:
        entry = self.get(model_id)
        if entry is None:
            raise CatalogError(404, "model_not_found", f"The model `{model_id}` is not in the catalog.")
        return entry

    # -- profiles -------------------------------------------------------------------------------

    def profiles(self) -> dict[str, Profile]:
        stored = self.store.profiles() if self.store else {}
        out = {name: Profile(name=name, models=models, source="api") for name, models in stored.items()}
        out |= {name: Profile(name=name, models=p.models, source="config") for name, p in self.config.profiles.items()}
        for name, profile in out.items():
            profile.active = name == self.active_profile
        return out

    def set_active_profile(self, name: str) -> None:
        self.active_profile = name
        if self.store:
            self.store.set_active_profile(name, self.config.catalog.profile)

    def startup_profile(self) -> str | None:
        """The profile to activate at startup: the one last activated (through the API too), unless
        the config's `[catalog] profile` changed since then; then the config's value wins.

        An operator's API choice thus survives a restart, while an edit of the config file (the
        other way to choose) is never silently overridden by an older API call.
        """
        configured = self.config.catalog.profile
        stored = self.store.active_profile() if self.store else None
        if stored is None:
            return configured
        name, configured_then = stored
        if configured_then != configured or name not in self.profiles():
            return configured
        return name

    def profile(self, name: str) -> Profile:
        profile = self.profiles().get(name)
        if profile is None:
            raise CatalogError(404, "profile_not_found", f"There is no profile {name!r}.")
        return profile

    def save_profile(self, name: str, models: list[str]) -> Profile:
        if not PROFILE_NAME.match(name):
            raise CatalogError(400, "invalid_profile", f"{name!r} is not a profile name (letters, digits, '.', "
                               "'_' and '-'; at most 64).")
        if name in self.config.profiles:
            raise CatalogError(409, "profile_in_config", f"Profile {name!r} is defined in the config file.")
        if not models:
            raise CatalogError(400, "invalid_profile", "A profile needs at least one model.")
        self.profile_models(models)
        if self.store is None:
            raise CatalogError(500, "no_state", "Profiles need the state directory.")
        self.store.save_profile(name, models)
        return self.profile(name)

    def delete_profile(self, name: str) -> Profile:
        profile = self.profile(name)
        if name == self.active_profile:
            raise CatalogError(409, "profile_active", f"Profile {name!r} is active; activate another one first.")
        if profile.source == "config":
            raise CatalogError(409, "profile_in_config", f"Profile {name!r} is defined in the config file.")
        assert self.store is not None
        self.store.delete_profile(name)
        return profile

    def profile_models(self, models: list[str]) -> list[ModelEntry]:
        """The enabled entries a profile names (an unknown or disabled one is an error)."""
        entries = []
        for name in models:
            entry = self.get(name)
            if entry is None or not entry.enabled:
                raise CatalogError(404, "model_not_found",
                                   f"The model `{name}` is not in the catalog" + (" (disabled)." if entry else "."))
            entries.append(entry)
        return entries


def _facts(path: str) -> ModelFacts:
    """A configured model's facts; a model the catalog cannot read is still served as configured."""
    local = Path(path)
    try:
        if path.endswith(GGUF_SUFFIX) and local.is_file():
            return describe_gguf(local)
        directory = local if local.is_dir() else hf_cache_snapshot(path)
        if directory is not None:
            return describe_dir(directory, directory.name)
    except NotAModel as e:
        log.info("catalog: %s", e)
    return ModelFacts()

