"""`mlx-fleet models [list|scan|enable|disable|tier]` and `mlx-fleet profile [list|use NAME]`."""

from __future__ import annotations

import argparse
import json
import sys

import httpx

from mlx_fleet.admin_cli import Spinner
from mlx_fleet.units import fmt_bytes


class CommandFailed(Exception):
    pass


def run(args: argparse.Namespace) -> int:
    action = args.action or "list"
    try:
        body, text = _do(args, action)
    except CommandFailed as e:
        print(f"mlx-fleet: {e}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2) if args.json else text)
    return 0


def _do(args: argparse.Namespace, action: str) -> tuple[dict, str]:
    if args.command == "profile":
        if action == "use":
            with Spinner(f"activating profile {args.name}"):
                body = _request(args, "POST", f"/admin/profiles/{args.name}/activate")
            unpinned = f"; unpinned {', '.join(body['unpinned'])}" if body["unpinned"] else ""
            return body, (f"profile {body['profile']} active: {', '.join(body['pinned'])} loaded and pinned "
                          f"in {body['seconds']:.2f} s{unpinned}")
        body = _request(args, "GET", "/admin/profiles")
        return body, format_profiles(body)
    if action == "scan":
        body = _request(args, "POST", "/admin/models/rescan")
        return body, (f"{body['models_found']} models found on disk; added: {', '.join(body['models_added']) or '-'}; "
                      f"removed: {', '.join(body['models_removed']) or '-'}")
    if action in ("enable", "disable"):
        body = _request(args, "PUT", f"/admin/models/{args.model}/enabled", {"enabled": action == "enable"})
        return body, f"{body['id']}: {'enabled' if body['enabled'] else 'disabled'}"
    if action == "tier":
        body = _request(args, "PUT", f"/admin/models/{args.model}/tier", {"tier": args.tier})
        return body, f"{body['id']}: tier {body['tier']}"
    body = _request(args, "GET", "/admin/models/registry")
    return body, format_registry(body)


def _request(args: argparse.Namespace, method: str, path: str, payload: dict | None = None) -> dict:
    headers = {"Authorization": f"Bearer {args.admin_key}"} if args.admin_key else {}
    base = args.url.rstrip("/")
    try:
        response = httpx.request(method, f"{base}{path}", json=payload, headers=headers, timeout=None)
    except httpx.HTTPError as e:
        raise CommandFailed(f"cannot reach {base}: {e}") from None
    body = response.json()
    if response.status_code >= 300:
        raise CommandFailed(f"{response.status_code}: {body.get('error', {}).get('message', body)}")
    return body


def _count(n: int | None) -> str:
    if not n:
        return "-"
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def format_registry(body: dict) -> str:
    header = ("MODEL", "TYPE", "TIER", "SOURCE", "PARAMS", "SIZE", "QUANT", "CONTEXT", "TOOLS", "THINKS", "ENABLED")
    rows = [header]
    for m in body["models"]:
        q = m.get("quantization")
        rows.append((m["id"], m["type"], m["tier"], m["source"], _count(m.get("parameters")),
                     fmt_bytes(m["size_bytes"]), f"{q['bits']}-bit/{q['group_size']}" if q else "-",
                     str(m.get("context_length") or "-"), "yes" if m["supports_tools"] else "",
                     "yes" if m["thinking"] else "", "yes" if m["enabled"] else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    folders = ", ".join(body["scan_paths"]) or "none"
    lines += ["", f"scan folders: {folders}; Hugging Face cache: {'yes' if body['hf_cache'] else 'no'}; "
                  f"active profile: {body['active_profile'] or '-'}"]
    return "\n".join(lines)


def format_profiles(body: dict) -> str:
    if not body["profiles"]:
        return "no profiles"
    return "\n".join(f"{'*' if p['active'] else ' '} {p['name']} ({p['source']}): {', '.join(p['models'])}"
                     for p in body["profiles"])
