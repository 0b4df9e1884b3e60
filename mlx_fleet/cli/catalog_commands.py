"""`mlx-fleet models [list|scan|enable|disable|tier]` and `mlx-fleet profile [list|use NAME]`."""

from __future__ import annotations

import argparse
import json
import sys

from typing import TypeVar

import httpx
import msgspec

from mlx_fleet.cli.fleet_commands import Spinner
from mlx_fleet.catalog.entry import Activation, ModelEntry, ProfileList, RegistryListing, ScanResult
from mlx_fleet.units import fmt_bytes


T = TypeVar("T")


class CommandFailed(Exception):
    pass


def run(args: argparse.Namespace) -> int:
    try:
        raw, text = _do(args, args.action or "list")
    except CommandFailed as e:
        print(f"mlx-fleet: {e}", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(raw), indent=2) if args.json else text)
    return 0


def _do(args: argparse.Namespace, action: str) -> tuple[bytes, str]:
    """The server's answer as it came, and as a person reads it."""
    if args.command == "profile":
        if action == "use":
            with Spinner(f"activating profile {args.name}"):
                raw, done = _request(args, Activation, "POST", f"/admin/profiles/{args.name}/activate")
            unpinned = f"; unpinned {', '.join(done.unpinned)}" if done.unpinned else ""
            return raw, (f"profile {done.profile} active: {', '.join(done.pinned)} loaded and pinned "
                         f"in {done.seconds:.2f} s{unpinned}")
        raw, profiles = _request(args, ProfileList, "GET", "/admin/profiles")
        return raw, format_profiles(profiles)
    if action == "scan":
        raw, scan = _request(args, ScanResult, "POST", "/admin/models/rescan")
        return raw, (f"{scan.models_found} models found on disk; added: {', '.join(scan.added) or '-'}; "
                     f"removed: {', '.join(scan.removed) or '-'}")
    if action in ("enable", "disable"):
        raw, entry = _request(args, ModelEntry, "PUT", f"/admin/models/{args.model}/enabled",
                              {"enabled": action == "enable"})
        return raw, f"{entry.id}: {'enabled' if entry.enabled else 'disabled'}"
    if action == "tier":
        raw, entry = _request(args, ModelEntry, "PUT", f"/admin/models/{args.model}/tier", {"tier": args.tier})
        return raw, f"{entry.id}: tier {entry.tier}"
    raw, registry = _request(args, RegistryListing, "GET", "/admin/models/registry")
    return raw, format_registry(registry)


def _request(args: argparse.Namespace, kind: type[T], method: str, path: str,
             payload: dict | None = None) -> tuple[bytes, T]:
    headers = {"Authorization": f"Bearer {args.admin_key}"} if args.admin_key else {}
    base = args.url.rstrip("/")
    try:
        response = httpx.request(method, f"{base}{path}", json=payload, headers=headers, timeout=None)
    except httpx.HTTPError as e:
        raise CommandFailed(f"cannot reach {base}: {e}") from None
    if response.status_code >= 300:
        body = response.json()
        raise CommandFailed(f"{response.status_code}: {body.get('error', {}).get('message', body)}")
    return response.content, msgspec.json.decode(response.content, type=kind)


def _count(n: int | None) -> str:
    if not n:
        return "-"
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def format_registry(registry: RegistryListing) -> str:
    header = ("MODEL", "TYPE", "TIER", "SOURCE", "PARAMS", "SIZE", "QUANT", "CONTEXT", "TOOLS", "THINKS", "ENABLED")
    rows = [header]
    for m in registry.models:
        q = m.quantization
        rows.append((m.id, m.type, m.tier, m.source, _count(m.parameters), fmt_bytes(m.size_bytes),
                     f"{q.bits}-bit/{q.group_size}" if q else "-", str(m.context_length or "-"),
                     "yes" if m.supports_tools else "", "yes" if m.thinking else "", "yes" if m.enabled else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    folders = ", ".join(registry.scan_paths) or "none"
    lines += ["", f"scan folders: {folders}; Hugging Face cache: {'yes' if registry.hf_cache else 'no'}; "
                  f"active profile: {registry.active_profile or '-'}"]
    return "\n".join(lines)


def format_profiles(listing: ProfileList) -> str:
    if not listing.profiles:
        return "no profiles"
    return "\n".join(f"{'*' if p.active else ' '} {p.name} ({p.source}): {', '.join(p.models)}"
                     for p in listing.profiles)
