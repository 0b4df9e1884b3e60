"""One model the fleet can serve, as the registry API and `/v1/models` describe it."""

from __future__ import annotations

from typing import Literal

import msgspec

Source = Literal["config", "scan", "hf_cache"]
Tier = Literal["fast", "balanced", "powerful"]
TIERS: tuple[Tier, ...] = ("fast", "balanced", "powerful")


class Quantization(msgspec.Struct, frozen=True):
    bits: int
    group_size: int


class ModelFacts(msgspec.Struct, kw_only=True):
    """What a model's files say about it, read without loading it (see `catalog.inspect`)."""

    type: str = "text"
    architecture: str | None = None
    size_bytes: int = 0
    parameters: int | None = None
    quantization: Quantization | None = None
    context_length: int | None = None
    supports_tools: bool = False
    thinking: bool = False


class ModelEntry(ModelFacts, kw_only=True):
    """A catalog entry: the model's facts, where it came from, and the user's choices for it."""

    id: str
    path: str
    source: Source
    tier: Tier = "balanced"
    enabled: bool = True
    aliases: list[str] = []

    @classmethod
    def from_facts(cls, model_id: str, path: str, source: Source, facts: ModelFacts) -> ModelEntry:
        return cls(id=model_id, path=path, source=source, **msgspec.structs.asdict(facts))


# The registry API's answers, typed once for the supervisor that builds them, the router that
# serves them and the CLI that prints them.


class RegistryListing(msgspec.Struct, kw_only=True):
    """`GET /admin/models/registry`."""

    models: list[ModelEntry]
    scan_paths: list[str]
    hf_cache: bool
    last_scan: float | None
    active_profile: str | None


class TierModels(msgspec.Struct, kw_only=True):
    """`GET /admin/models/tiers/{tier}`: its enabled models, smallest first."""

    tier: str
    models: list[ModelEntry]


class ScanResult(msgspec.Struct, kw_only=True):
    """`POST /admin/models/rescan`: the counts (`models_*`), and the ids added and removed."""

    models_found: int
    models_added: int
    models_removed: int
    added: list[str]
    removed: list[str]
    timestamp: float


class Profile(msgspec.Struct, kw_only=True):
    name: str
    models: list[str]
    source: Literal["config", "api"]
    active: bool = False


class ProfileList(msgspec.Struct, kw_only=True):
    """`GET /admin/profiles`."""

    profiles: list[Profile]
    active: str | None


class Activation(msgspec.Struct, kw_only=True):
    """`POST /admin/profiles/{name}/activate`: what was pinned, what was let go, how long it took."""

    profile: str
    pinned: list[str]
    unpinned: list[str]
    seconds: float
