"""`mlx-fleet keys | usage | logs`: API keys, usage figures and worker logs, for people at a terminal.

`keys` works on the state database directly, so keys can be made before the server first starts
(a server bound beyond loopback needs one); a running router sees a change from its next request.
`usage` and `logs` ask a running server's admin API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from mlx_fleet.state import accounts, keys
from mlx_fleet.cli.fleet_commands import call, table
from mlx_fleet.config import ConfigError, ServerConfig, load_config
from mlx_fleet.state.usage_queries import Aggregate


def add_commands(sub: argparse._SubParsersAction, client_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """`client_options` adds --url, --admin-key and --json to a command that talks to a server."""
    cmd = sub.add_parser("keys", help="create, list and revoke API keys (in the state database)")
    cmd.add_argument("--config", type=Path, help="fleet.toml, for its server.state_dir")
    cmd.add_argument("--state-dir", help="default: server.state_dir from --config, $MLX_FLEET_SERVER_STATE_DIR "
                                         "or ~/.cache/mlx-fleet")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    verbs = cmd.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="make a key; its token is printed once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", choices=keys.SCOPES,
                        help="repeat for several; default: every /v1 scope")
    create.add_argument("--user", help="the id of the user the key belongs to (see /admin/users)")
    listing = verbs.add_parser("list", help="every live key, without its token")
    listing.add_argument("--q", default="", help="only keys whose name or id contains this")
    listing.add_argument("--sort", default="created_at", help="name, created_at, last_used_at, requests; -x reverses")
    revoke = verbs.add_parser("revoke", help="revoke a key: refused from the next request on")
    revoke.add_argument("id")

    usage = sub.add_parser("usage", help="requests, errors and tokens, by model, key or endpoint")
    client_options(usage)
    usage.add_argument("--by", default="model", choices=["model", "key", "endpoint", "user", "org"])
    usage.add_argument("--since", help="unix seconds, or a duration back from now: 90m, 1h, 7d")

    logs = sub.add_parser("logs", help="a model's worker output")
    client_options(logs)
    logs.add_argument("model")
    logs.add_argument("--tail", type=int, default=100, help="how many of the last lines (default 100)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    logs.add_argument("--diagnose", action="store_true", help="also why its last load failed, its type and size")


def state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir).expanduser()
    if args.config:
        return Path(load_config(args.config).server.state_dir).expanduser()
    from_env = os.environ.get("MLX_FLEET_SERVER_STATE_DIR", "").strip().strip("\"'")
    return Path(from_env or ServerConfig().state_dir).expanduser()


def run_keys(args: argparse.Namespace) -> int:
    try:
        conn = keys.open_db(state_dir(args))
    except ConfigError as e:
        print(f"mlx-fleet: invalid configuration: {e}", file=sys.stderr)
        return 2
    try:
        if args.verb == "create":
            created = keys.create_key(conn, args.name, args.scope, args.user)
            _print(args, created, f"{created.key}\n(id {created.id}, scopes {','.join(created.scopes)}; "
                                  "the token is shown only now)")
        elif args.verb == "list":
            found = keys.list_keys(conn, args.q, args.sort)
            _print(args, found, format_keys(found))
        else:
            keys.revoke_key(conn, args.id)
            _print(args, {"id": args.id, "revoked": True}, f"{args.id}: revoked")
    except (keys.KeyProblem, accounts.AccountProblem) as e:
        print(f"mlx-fleet: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


def _print(args: argparse.Namespace, value: object, text: str) -> None:
    print(msgspec.json.format(msgspec.json.encode(value)).decode() if args.json else text)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def format_keys(found: list[keys.ApiKey]) -> str:
    return table(("ID", "NAME", "SCOPES", "CREATED", "LAST USED", "REQUESTS"),
                 [(k.id, k.name, ",".join(k.scopes), _when(k.created_at), _when(k.last_used_at), str(k.requests))
                  for k in found])


def run_usage(args: argparse.Namespace) -> int:
    params = {"by": args.by, **({"since": args.since} if args.since else {})}
    response = call(args, "GET", "/admin/usage/aggregate", params=params)
    if response is None:
        return 1
    if args.json:
        print(json.dumps(response.json(), indent=2))
        return 0
    body = msgspec.json.decode(response.content, type=Aggregate)
    print(table((args.by.upper(), "REQUESTS", "ERRORS", "PROMPT TOKENS", "COMPLETION TOKENS", "CACHED"),
                [(t.group or "-", str(t.requests), str(t.errors), str(t.prompt_tokens), str(t.completion_tokens),
                  str(t.cached_tokens)) for t in body.data]))
    return 0


def run_logs(args: argparse.Namespace, poll: float = 1.0) -> int:
    path = f"/admin/models/logs/{args.model}"
    response = call(args, "GET", path, params={"tail": args.tail, "diagnose": str(args.diagnose).lower()})
    if response is None:
        return 1
    if args.json:
        print(json.dumps(response.json(), indent=2))
        return 0
    body = response.json()
    print("\n".join(body["lines"]))
    if body.get("diagnosis"):
        print(format_diagnosis(body["diagnosis"]))
    try:
        while args.follow:
            time.sleep(poll)
            response = call(args, "GET", path, params={"after": body["offset"], "tail": 10000})
            if response is None:
                return 1
            body = response.json()
            if body["lines"]:
                print("\n".join(body["lines"]), flush=True)
    except KeyboardInterrupt:
        pass
    return 0


def format_diagnosis(d: dict) -> str:
    lines = ["", f"{d['model_id']}: {d['state']}, type {d['detected_type']}, estimated {d['estimate_bytes']} bytes"
                 + (" (measured before)" if d["estimate_was_measured"] else ""),
             f"config: {json.dumps(d['config'])}"]
    failed = d.get("last_failed_load")
    if failed:
        lines += [f"last failed load ({_when(failed['at'])}): {failed['reason']}", failed["traceback"]]
    return "\n".join(lines)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"keys": run_keys, "usage": run_usage, "logs": run_logs}
