"""Admin replies: the typed JSON the admin API answers with."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["GB", "StatusModelType", "STATUS_MODEL_TYPES", "gigabytes", "ModelMemory", "ModelStatus", "LoadResult", "UnloadResult", "SpareStatus", "PoolStatus", "MemoryTotals", "FleetStatus", "FailedLoad", "Diagnosis", "DryRunWarning", "DryRunResult", "HealthStatus"]


# ---------------------------------------------------------------------------------------------
# Admin replies: the JSON the admin API answers with, typed once for the supervisor that builds
# it, the router that serves it and the CLI that reads it. Mappings, not arrays (they become JSON
# objects). They are a superset of the design documents' shapes (`loaded_models`, `model_id`,
# `size_gb`, `status: "loaded"`, ...), so a client written for those reads mlx-fleet unchanged.

GB = 10**9
StatusModelType = Literal["text-gen", "vision", "embeddings"]
# The status reports a model's type in the design documents' words (`text-gen`); the config's
# `ModelType` (`mlx_fleet.model_types`) says `text`.
STATUS_MODEL_TYPES: dict[str, StatusModelType] = {"auto": "text-gen", "text": "text-gen", "vision": "vision",
                                                  "embeddings": "embeddings"}


def gigabytes(n: int | None) -> float | None:
    return None if n is None else round(n / GB, 3)


class _Json(msgspec.Struct, kw_only=True):
    pass


class ModelMemory(_Json, kw_only=True):
    measured: int | None        # footprint measured since it loaded (None: not loaded)
    estimated: int | None       # what the policy assumed before loading
    estimate_was_measured: bool
    mlx_active: int | None      # the worker's own last report
    mlx_cache: int | None


class ModelStatus(_Json, kw_only=True):
    id: str
    type: str
    state: str
    pid: int | None
    memory: ModelMemory
    preload: bool
    pinned: bool
    loaded_at: float | None
    last_used: float | None
    load_seconds: float | None
    context_length: int | None
    in_flight: int
    queued: int
    served: int
    tokens_generated: int
    ttl_remaining: float | None
    last_error: str | None
    last_error_out_of_memory: bool    # the last load failed for want of memory (LoadFailed.out_of_memory)
    # Since the server started: successful loads and their seconds, failed loads, evictions to make
    # room or to get back under the budget, and crashes (a loaded worker that died or hung).
    loads: int = 0
    load_seconds_total: float = 0.0
    load_failures: int = 0
    evictions: int = 0
    crashes: int = 0
    # The design documents' names.
    model_id: str
    model_type: StatusModelType
    size_gb: float | None             # measured, else estimated, while it has a process
    preloaded: bool                   # pinned: preloaded or loaded by an administrator
    # The catalog's view: the model's tier, and where it came from ("config", "scan", "hf_cache").
    tier: str | None = None
    source: str | None = None


class LoadResult(ModelStatus, kw_only=True):
    """`POST /admin/models/load/{id}`: the model's status once it is ready."""

    status: Literal["loaded"] = "loaded"


class UnloadResult(_Json, kw_only=True):
    """`POST /admin/models/unload/{id}`: how the worker ended and what that gave back."""

    status: Literal["unloaded"] = "unloaded"
    model_id: str
    model: str
    action: Literal["drained", "forced"]
    memory_released: int
    seconds: float
    state: str


class SpareStatus(_Json, kw_only=True):
    pid: int | None
    state: Literal["starting", "ready"]
    memory: int


class PoolStatus(_Json, kw_only=True):
    policy: str
    budget: int
    in_use: int
    available: int
    max_models: int
    loaded: int
    machine_total: int
    machine_available: int
    accepting: bool
    spare: SpareStatus | None         # the first of `spares` (the one the next load takes)
    spares: list[SpareStatus]
    spares_wanted: int                # memory.spares


class MemoryTotals(_Json, kw_only=True):
    active_gb: float                  # the workers' MLX active memory, summed
    cache_gb: float                   # the workers' MLX cache memory, summed


class FleetStatus(_Json, kw_only=True):
    """`GET /admin/models/status`."""

    models: list[ModelStatus]         # every configured model, loaded or not
    pool: PoolStatus
    loaded_models: list[ModelStatus]  # those with a worker process
    total_models: int                 # how many are loaded
    memory: MemoryTotals
    max_memory_gb: float              # the budget
    max_models: int


class FailedLoad(_Json, kw_only=True):
    at: float                         # unix time
    reason: str
    traceback: str                    # the worker's, or the last lines of its output
    out_of_memory: bool


class Diagnosis(_Json, kw_only=True):
    """`GET /admin/models/{id}/logs?diagnose=true`: the model as the supervisor sees it."""

    model_id: str
    state: str
    detected_type: str                # from its config.json (or as configured)
    estimate_bytes: int
    estimate_was_measured: bool
    config: dict[str, Any]            # its [[models]] entry, resolved
    last_failed_load: FailedLoad | None


class DryRunWarning(_Json, kw_only=True):
    severity: Literal["info", "warning", "error"]
    category: Literal["memory", "download", "architecture", "state"]
    title: str
    message: str


class DryRunResult(_Json, kw_only=True):
    """`POST /admin/models/{id}/dry-run`: what a load would do now; nothing is loaded or evicted."""

    model_id: str
    type: str
    state: str
    estimate_bytes: int
    estimate_was_measured: bool
    vram_estimate_gb: float
    budget_bytes: int
    in_use_bytes: int
    fits_now: bool                    # loads without evicting anything (or is loaded already)
    fits: bool                        # loads, after the evictions below
    would_evict: list[str]            # idle models that would be ended, least recently used first
    would_drain: list[str]            # busy models that would finish their requests, then end
    warnings: list[DryRunWarning]


class HealthStatus(_Json, kw_only=True):
    """`GET /admin/health`."""

    status: Literal["healthy", "degraded", "unavailable"]
    supervisor: Literal["ok", "unreachable"]
    workers: dict[str, str]
    reason: str | None = None
