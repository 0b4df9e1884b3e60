"""`mlx-fleet status | load | unload`: the admin API, for people at a terminal."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time

import httpx

from mlx_fleet.units import fmt_bytes


def call(args: argparse.Namespace, method: str, path: str, **kwargs) -> dict | None:
    """The admin API's JSON answer, or None after telling the user why there is none."""
    headers = {"Authorization": f"Bearer {args.admin_key}"} if args.admin_key else {}
    base = args.url.rstrip("/")
    try:
        response = httpx.request(method, f"{base}{path}", headers=headers, **{"timeout": 30, **kwargs})
    except httpx.HTTPError as e:
        print(f"mlx-fleet: cannot reach {base}: {e}", file=sys.stderr)
        return None
    body = response.json()
    if response.status_code != 200:
        print(f"mlx-fleet: {response.status_code}: {body.get('error', {}).get('message', body)}", file=sys.stderr)
        return None
    return body


def run(args: argparse.Namespace) -> int:
    if args.command == "status":
        body = call(args, "GET", "/admin/models/status")
    else:
        with Spinner(f"{args.command}ing {args.model}"):
            body = call(args, "POST", f"/admin/models/{args.command}/{args.model}", timeout=None,
                        params={"force": "true"} if args.command == "unload" and args.force else None)
    if body is None:
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    elif args.command == "status":
        print(format_status(body))
    elif args.command == "load":
        print(f"{body['id']}: {body['state']}, pid {body['pid']}, {_mem(body['memory']['measured'])}, "
              f"loaded in {body['load_seconds']:.2f} s, pinned")
    else:
        print(f"{body['model']}: {body['action']}, released {fmt_bytes(body['memory_released'])} "
              f"in {body['seconds']:.2f} s")
    return 0


def _mem(n: int | None) -> str:
    return fmt_bytes(n) if n else "-"


def _age(t: float | None, now: float) -> str:
    if not t:
        return "-"
    s = int(now - t)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_status(body: dict) -> str:
    now = time.time()
    header = ("MODEL", "TYPE", "STATE", "PID", "MEASURED", "ESTIMATED", "PIN", "IN FLIGHT", "QUEUED",
              "SERVED", "TOKENS", "IDLE", "TTL LEFT")
    rows: list[tuple[str, ...]] = []
    for m in body["models"]:
        ttl = m["ttl_remaining"]
        rows.append((m["id"], m["type"], m["state"], str(m["pid"] or "-"), _mem(m["memory"]["measured"]),
                     _mem(m["memory"]["estimated"]), "yes" if m["pinned"] else "", str(m["in_flight"]),
                     str(m["queued"]), str(m["served"]), str(m["tokens_generated"]), _age(m["last_used"], now),
                     f"{ttl:.0f}s" if ttl is not None else "-"))
    lines = table(header, rows).splitlines()
    for m in body["models"]:
        if m["last_error"]:
            lines.append(f"{m['id']}: last error: {m['last_error']}")
    p = body["pool"]
    lines.append("")
    lines.append(f"policy {p['policy']}: {_mem(p['in_use'])} of {_mem(p['budget'])} in use "
                 f"({_mem(p['available'])} free), {p['loaded']} of at most {p['max_models']} models; "
                 f"machine {_mem(p['machine_available'])} available of {_mem(p['machine_total'])}")
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
