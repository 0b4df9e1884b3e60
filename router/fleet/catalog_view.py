"""The router's copy of the catalog: which names a client may send, and what each one is.

The supervisor owns the catalog (it scans, keeps the overrides, and decides what is loaded); the
router needs the names on every request (404 for an unknown or disabled model, the model's type
and default temperature) and the list for `/v1/models`, without a round trip each time. So it
keeps a snapshot: fetched from the supervisor at startup, and again after each admin call that
changes the catalog (every change goes through the router's admin API). Until the first fetch,
the configured models are known, and `/health` says the server is not ready.
"""

from __future__ import annotations

import asyncio
import logging

from mlx_fleet.catalog.entry import RegistryListing
from mlx_fleet.catalog.tiers import tier_request
from mlx_fleet.config import FleetConfig, ModelConfig
from mlx_fleet.protocol import GetCatalog, ResolveTier
from mlx_fleet.router.fleet.calls import ask
from mlx_fleet.router.fleet.client import FleetClient
from mlx_fleet.router.http.errors import ApiError

log = logging.getLogger("mlx_fleet.router")


class CatalogView:
    def __init__(self, config: FleetConfig, started: float) -> None:
        self.configured = {m.id: m for m in config.models}
        self.started = started
        self.loaded = asyncio.Event()
        self._apply([(m, [m.id, *m.aliases]) for m in config.models])

    def _apply(self, models: list[tuple[ModelConfig, list[str]]], context: dict[str, int | None] | None = None) -> None:
        self.names = {name: model for model, names in models for name in names}
        self.models = [model for model, _ in models]  # the enabled ones, in the registry's order
        # Each model's context length, as its files say (the catalog reads it); None until known.
        self.context_lengths = context or {}

    def apply(self, registry: RegistryListing) -> None:
        """Take a fresh registry: its enabled models, by id and alias."""
        models = []
        for entry in registry.models:
            if entry.enabled:
                model = self.configured.get(entry.id) or ModelConfig(id=entry.id, path=entry.path, type=entry.type)
                models.append((model, [entry.id, *entry.aliases]))
        self._apply(models, {entry.id: entry.context_length for entry in registry.models})
        self.loaded.set()

    async def refresh(self, client: FleetClient) -> None:
        self.apply(await ask(client, GetCatalog(), RegistryListing))

    async def keep_fetching(self, client: FleetClient, retry: float = 0.2) -> None:
        """At startup: until the supervisor answers with its catalog."""
        while not self.loaded.is_set():
            try:
                await self.refresh(client)
            except ApiError as e:
                log.info("waiting for the supervisor's catalog: %s", e)
                await asyncio.sleep(retry)

    async def resolve(self, client: FleetClient, name: str, embeddings: bool = False) -> tuple[ModelConfig, str]:
        """The model a request names, and the id to send it to (a `tier:` request's chosen model)."""
        tier = tier_request(name)
        if tier is not None:
            name = await ask(client, ResolveTier(tier, embeddings), str)
        model = self.names.get(name)
        if model is None:
            raise ApiError(404, f"The model `{name}` does not exist or you do not have access to it.",
                           code="model_not_found")
        return model, name
