"""`mlx-fleet status | load | unload`: the admin API, for people at a terminal."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time

import httpx
import msgspec

from mlx_fleet.protocol import FleetStatus, LoadResult, UnloadResult
from mlx_fleet.units import fmt_bytes


def call(args: argparse.Namespace, method: str, path: str, **kwargs) -> httpx.Response | None:
    """The admin API's answer when it is a 200, or None after telling the user what went wrong."""
    headers = {"Authorization": f"Bearer {args.admin_key}"} if args.admin_key else {}
    base = args.url.rstrip("/")
    try:
        response = httpx.request(method, f"{base}{path}", headers=headers, **{"timeout": 30, **kwargs})
    except httpx.HTTPError as e:
        print(f"mlx-fleet: cannot reach {base}: {e}", file=sys.stderr)
        return None
    if response.status_code != 200:
        body = response.json()
        print(f"mlx-fleet: {response.status_code}: {body.get('error', {}).get('message', body)}", file=sys.stderr)
        return None
    return response


def run(args: argparse.Namespace) -> int:
    if args.command == "status":
        response = call(args, "GET", "/admin/models/status")
    else:
        with Spinner(f"{args.command}ing {args.model}"):
            response = call(args, "POST", f"/admin/models/{args.command}/{args.model}", timeout=None,
                            params={"force": "true"} if args.command == "unload" and args.force else None)
    if response is None:
        return 1
    if args.json:
        print(json.dumps(response.json(), indent=2))
    elif args.command == "status":
        print(format_status(msgspec.json.decode(response.content, type=FleetStatus)))
    elif args.command == "load":
        m = msgspec.json.decode(response.content, type=LoadResult)
        print(f"{m.id}: {m.state}, pid {m.pid}, {_mem(m.memory.measured)}, "
              f"loaded in {m.load_seconds or 0:.2f} s, pinned")
    else:
        u = msgspec.json.decode(response.content, type=UnloadResult)
        print(f"{u.model}: {u.action}, released {fmt_bytes(u.memory_released)} in {u.seconds:.2f} s")
    return 0


def _mem(n: int | None) -> str:
    return fmt_bytes(n) if n else "-"


def _age(t: float | None, now: float) -> str:
    if not t:
        return "-"
    s = int(now - t)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_status(status: FleetStatus) -> str:
    now = time.time()
    header = ("MODEL", "TYPE", "TIER", "SOURCE", "STATE", "PID", "MEASURED", "ESTIMATED", "PIN", "IN FLIGHT",
              "QUEUED", "SERVED", "TOKENS", "IDLE", "TTL LEFT")
    rows: list[tuple[str, ...]] = []
    for m in status.models:
        ttl = m.ttl_remaining
        rows.append((m.id, m.type, m.tier or "-", m.source or "-", m.state, str(m.pid or "-"),
                     _mem(m.memory.measured), _mem(m.memory.estimated), "yes" if m.pinned else "", str(m.in_flight),
                     str(m.queued), str(m.served), str(m.tokens_generated), _age(m.last_used, now),
                     f"{ttl:.0f}s" if ttl is not None else "-"))
    lines = table(header, rows).splitlines()
    for m in status.models:
        if m.last_error:
            oom = " (out of memory)" if m.last_error_out_of_memory else ""
            lines.append(f"{m.id}: last error{oom}: {m.last_error}")
    p = status.pool
    lines.append("")
    lines.append(f"policy {p.policy}: {_mem(p.in_use)} of {_mem(p.budget)} in use "
                 f"({_mem(p.available)} free), {p.loaded} of at most {p.max_models} models, "
                 f"{len(p.spares)} of {p.spares_wanted} warm spares; "
                 f"machine {_mem(p.machine_available)} available of {_mem(p.machine_total)}")
    return "\n".join(lines)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])


class Spinner:
    """A progress spinner on a terminal while a call waits; silent when output is not a terminal."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def __enter__(self) -> Spinner:
        if sys.stderr.isatty():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            sys.stderr.write("\r\033[K")

    def _spin(self) -> None:
        started = time.monotonic()
        for frame in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
            if self._stop.wait(0.1):
                return
            sys.stderr.write(f"\r{frame} {self.text} ({time.monotonic() - started:.0f} s)")
            sys.stderr.flush()
