"""Everything the router's handlers read, in one typed object (`RouterState`), one per app.

It is held on `app.state` under one key and handed to each handler that names a `router:
FromApp[RouterState]` parameter (a Litestar dependency, `RouterState.dependency()`), so a
handler's signature says what it uses and every use is type-checked, instead of untyped `State`
attributes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, TypeAlias, TypeVar

from litestar import Litestar
from litestar.di import Dependency, Provide
from litestar.params import SkipValidationMarker

from mlx_fleet.config import FleetConfig
from mlx_fleet.router.auth.sessions import Sessions
from mlx_fleet.router.fleet.catalog_view import CatalogView
from mlx_fleet.router.fleet.client import FleetClient
from mlx_fleet.router.fleet.exchange import Exchange
from mlx_fleet.router.http.admission import Admission
from mlx_fleet.router.http.usage import UsageRecord, UsageWriter
from mlx_fleet.router.http.usage_metrics import RequestMetrics
from mlx_fleet.router.inputs.images import ImagePolicy

KEY = "router"  # on app.state, and the handlers' parameter name
T = TypeVar("T")

FromApp: TypeAlias = Annotated[T, Dependency(kind="named"), SkipValidationMarker()]
"""A handler parameter the app provides by its name (`router`), as it is: not validated per request."""


@dataclass(slots=True)
class RouterState:
    config: FleetConfig
    started: float  # when the server started: uptime, and /v1/models' `created`
    catalog: CatalogView
    admission: Admission
    images: ImagePolicy
    db_path: Path  # the state database: keys, usage
    usage: UsageWriter
    metrics: RequestMetrics
    sessions: Sessions
    fleet: FleetClient = field(init=False)  # connected by the app's lifespan, before any request
    capabilities: asyncio.Future[bytes] | None = None  # the MLX probe's answer, asked once

    @classmethod
    def of(cls, app: Litestar) -> RouterState:
        return app.state[KEY]

    def exchange(self, model: str, prefix: str, usage: UsageRecord | None = None) -> Exchange:
        """A request's way through this app's fleet, to `model` (the name the supervisor resolves),
        its id `prefix` + random hex, its usage recorded in `usage` (None: not recorded)."""
        return Exchange.new(self.fleet, self.admission, model, prefix, usage)

    def dependency(self) -> dict[str, Provide]:
        """The app's `dependencies`: this object, as every handler's `router` parameter."""
        return {KEY: Provide(lambda: self, use_cache=True, sync_to_thread=False)}
