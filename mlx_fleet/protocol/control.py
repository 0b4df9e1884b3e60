"""Control: a worker's lifecycle messages and the admin RPC calls with their one reply envelope."""

from __future__ import annotations

from typing import Any

from mlx_fleet.protocol.frames import _Wire
from mlx_fleet.protocol.generation import Failure

__all__ = ["Memory", "Loading", "Ready", "LoadFailed", "MemoryReport", "Shutdown", "Spare", "Assign", "Control", "GetStatus", "LoadModel", "UnloadModel", "Ping", "GetCatalog", "Rescan", "SetModel", "ResolveTier", "GetProfiles", "SaveProfile", "DeleteProfile", "ActivateProfile", "Diagnose", "DryRun", "Call", "Reply"]


# ---------------------------------------------------------------------------------------------
# Worker control (both directions)


class Memory(_Wire):
    """What a worker measured of itself, in bytes."""

    rss: int
    mlx_active: int = 0
    mlx_cache: int = 0
    mlx_peak: int = 0


class Loading(_Wire, tag=5):
    """The worker is up and connected, and is now importing its libraries and loading weights."""

    pid: int


class Ready(_Wire, tag=1):
    pid: int
    memory: Memory
    context_length: int
    load_seconds: float


class LoadFailed(_Wire, tag=2):
    message: str
    out_of_memory: bool = False
    traceback: str = ""  # where the load failed, for `logs?diagnose=true`


class MemoryReport(_Wire, tag=3):
    memory: Memory


class Shutdown(_Wire, tag=4):
    """Ask a worker to finish: cancel what it is doing and exit."""


class Spare(_Wire, tag=6):
    """A warm spare: connected, MLX libraries imported, waiting for `Assign`."""

    pid: int
    memory: Memory


class Assign(_Wire, tag=7):
    """Turn a warm spare into the worker of this model."""

    model_id: str
    path: str
    model_type: str
    prompt_cache_bytes: int
    prompt_cache_disk: int = 0   # the fleet's bound on the prompt cache's disk tier; 0: off
    prompt_cache_dir: str = ""   # where that tier keeps its blocks


Control = Loading | Ready | LoadFailed | MemoryReport | Shutdown | Spare | Assign


# ---------------------------------------------------------------------------------------------
# Admin RPC (router -> supervisor -> router)


class GetStatus(_Wire, tag=1):
    pass


class LoadModel(_Wire, tag=2):
    model: str
    pin: bool = True


class UnloadModel(_Wire, tag=3):
    model: str
    force: bool = False


class Ping(_Wire, tag=4):
    """Is the supervisor there? Answered at once, with nothing computed."""


class GetCatalog(_Wire, tag=5):
    """The registry (`mlx_fleet.catalog.entry.RegistryListing`): every model, enabled or not; with a
    tier, only that tier's enabled models, smallest first."""

    tier: str | None = None


class Rescan(_Wire, tag=6):
    pass


class SetModel(_Wire, tag=7):
    """Enable or disable a model, or set its tier (None leaves that choice as it is)."""

    model: str
    enabled: bool | None = None
    tier: str | None = None


class ResolveTier(_Wire, tag=8):
    """Which model answers a `tier:NAME` request: its id (a loaded one of the tier if any)."""

    tier: str
    embeddings: bool = False


class GetProfiles(_Wire, tag=9):
    pass


class SaveProfile(_Wire, tag=10):
    name: str
    models: tuple[str, ...]


class DeleteProfile(_Wire, tag=11):
    name: str


class ActivateProfile(_Wire, tag=12):
    name: str


class Diagnose(_Wire, tag=13):
    """What is known about a model and its last failed load (`logs?diagnose=true`)."""

    model: str


class DryRun(_Wire, tag=14):
    """What loading a model would do now, without doing it."""

    model: str


Call = (GetStatus | LoadModel | UnloadModel | Ping | GetCatalog | Rescan | SetModel | ResolveTier | GetProfiles
        | SaveProfile | DeleteProfile | ActivateProfile | Diagnose | DryRun)


class Reply(_Wire):
    """One envelope for every admin call: a failure, or a JSON-ready result (one of the structs
    below, which arrives as a plain mapping and is converted back to its type by the reader)."""

    failure: Failure | None = None
    result: Any = None
