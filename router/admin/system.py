"""`/admin/system/*`: the machine and the fleet at a glance, what MLX runs on, and token throughput.

Capabilities come from `python -m mlx_fleet.worker.capabilities`, a short-lived process (the router never
imports MLX), run once and remembered: the versions and the device do not change while we run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
from litestar import Response, get

from mlx_fleet.router.admin.common import fleet_status, in_db
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.openapi import error_responses
from mlx_fleet.router.router_state import FromApp, RouterState
from mlx_fleet.state import usage_queries as q

CAPABILITIES_TIMEOUT = 120.0
_ERRORS = error_responses()


class Summary(msgspec.Struct, kw_only=True):
    cpu_percent: float
    cpu_count: int
    load_average: list[float]
    memory_total: int
    memory_available: int
    memory_used_by_fleet: int | None
    swap_total: int
    swap_used: int
    disk_free: int
    disk_total: int
    uptime_seconds: float
    machine_uptime_seconds: float
    workers: int | None
    supervisor: str


class MlxDevice(msgspec.Struct, kw_only=True):
    type: str
    metal: bool
    info: dict[str, Any]


class Capabilities(msgspec.Struct, kw_only=True):
    os: str
    machine: str
    chip: str
    python: str
    versions: dict[str, str | None]
    mlx_device: MlxDevice


@get("/admin/system/summary", responses=_ERRORS)
async def system_summary(router: FromApp[RouterState]) -> Response[Summary]:
    status = await fleet_status(router.fleet)
    state_dir = Path(router.config.server.state_dir).expanduser()
    vm, swap, disk = psutil.virtual_memory(), psutil.swap_memory(), psutil.disk_usage(str(state_dir))
    workers = None if status is None else sum(1 for m in status.models if m.pid)
    summary = Summary(
        cpu_percent=psutil.cpu_percent(interval=None), cpu_count=psutil.cpu_count() or 1,
        load_average=list(psutil.getloadavg()), memory_total=vm.total, memory_available=vm.available,
        memory_used_by_fleet=None if status is None else status.pool.in_use,
        swap_total=swap.total, swap_used=swap.used, disk_free=disk.free, disk_total=disk.total,
        uptime_seconds=time.time() - router.started, machine_uptime_seconds=time.time() - psutil.boot_time(),
        workers=workers, supervisor="unreachable" if status is None else "ok")
    return as_json(summary)


async def _probe_capabilities() -> bytes:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mlx_fleet.worker.capabilities", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), CAPABILITIES_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ApiError(503, "The MLX probe did not answer in time.", code="probe_failed") from None
    if process.returncode != 0:
        raise ApiError(503, f"The MLX probe failed: {err.decode(errors='replace')[-500:]}", code="probe_failed")
    return msgspec.json.encode(msgspec.json.decode(out, type=Capabilities))


@get("/admin/system/capabilities", responses=_ERRORS)
async def system_capabilities(router: FromApp[RouterState]) -> Response[Capabilities]:
    probe = router.capabilities
    if probe is None or (probe.done() and probe.exception() is not None):
        probe = router.capabilities = asyncio.ensure_future(_probe_capabilities())  # shared by concurrent callers
    return as_json(await asyncio.shield(probe))


@get("/admin/system/throughput", responses=_ERRORS)
async def system_throughput(router: FromApp[RouterState]) -> Response[q.Throughput]:
    await router.usage.written()
    return as_json(await in_db(router, q.throughput))


ROUTES = [system_summary, system_capabilities, system_throughput]
