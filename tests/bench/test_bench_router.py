"""Router: requests/s for `GET /v1/models` and `GET /health`, mlx-fleet vs a bare Litestar app.

The bare app (`bare_app.py`) runs on the same uvicorn settings as `mlx-fleet serve` (loopback,
log level info, no access log, the same backlog) and answers `/v1/models` with the very bytes the
fleet sends (copied from the fleet before the run) and `/health` with a constant. So the
difference is the fleet's own work per request: its guard and Host check, building the model
list, and for `/health` a round trip to the supervisor over ZeroMQ (`GetStatus`). No model is
loaded: these requests never reach a worker.

Load: C keep-alive connections (BENCH_ROUTER_CONNECTIONS, default 64) each sending one request
after another for BENCH_ROUTER_SECONDS (default 4) after a 1 s warm-up, with `wrk` when it is on
the PATH, else a small HTTP/1.1 client on asyncio (uvloop when installed) in this process.
Rounds alternate which server goes first.

    req/s       completed 200 responses ÷ seconds, median over rounds
    p50/p99     per-request latency (the Python client only; wrk's are in its JSON output)
    non-200     responses that were not 200, and connection errors

How to read it: "ratio" is fleet ÷ bare (1.00 = the fleet's routing costs nothing). On a 2-core
machine the load generator shares the CPUs with the server: absolute numbers are a floor, the
ratio is what carries over.

Settings: BENCH_ROUNDS (default 3), BENCH_ROUTER_CONNECTIONS, BENCH_ROUTER_SECONDS.
Results: bench-results/router.{json,png}.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time

import httpx
import pytest

from bench_report import med, pct, ratio, save, table
from benchlib import BENCH_DIR, FLEET, PY, READY_TIMEOUT, env_float, env_int, rounds, start_fleet
from fleet_server import ServerProcess, free_port

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

BARE = "bare Litestar"
PATHS = ("/v1/models", "/health")


def test_router_requests_per_second(bench_dir, state_dir, models, info):
    tiny = models.get("tiny")
    conns = env_int("BENCH_ROUTER_CONNECTIONS", 64)
    seconds = env_float("BENCH_ROUTER_SECONDS", 4.0)
    n_rounds = rounds(3)
    tool = "wrk" if shutil.which("wrk") else "python-asyncio"
    fleet = start_fleet(bench_dir / "router", {"bench": tiny.path}, state_dir=state_dir)
    bare = None
    try:
        body = httpx.get(f"{fleet.base_url}/v1/models").content
        models_json = bench_dir / "router" / "models.json"
        models_json.write_bytes(body)
        port = free_port()
        bare = ServerProcess([PY, str(BENCH_DIR / "bare_app.py"), "--port", str(port), "--models-json",
                              str(models_json)], port, bench_dir / "router" / f"bare-{port}.log", name=BARE,
                             kill_leftovers=True).wait_ready(READY_TIMEOUT)
        assert httpx.get(f"{bare.base_url}/v1/models").content == body
        servers = {FLEET: fleet, BARE: bare}
        samples: dict[str, dict[str, list[dict]]] = {path: {FLEET: [], BARE: []} for path in PATHS}
        for r in range(n_rounds):
            for path in PATHS:
                for side in (FLEET, BARE) if r % 2 == 0 else (BARE, FLEET):
                    result = load(tool, servers[side].port, path, conns, seconds)
                    samples[path][side].append(result)
                    print(f"[bench] round {r} {side} {path}: {result['rps']:,.0f} req/s "
                          f"({result['errors']} non-200/errors)")
    finally:
        fleet.stop()
        if bare is not None:
            bare.stop()

    summary = {path: {side: {"rps": med(x["rps"] for x in xs), "p50_ms": med(x.get("p50_ms") for x in xs),
                             "p99_ms": med(x.get("p99_ms") for x in xs), "errors": sum(x["errors"] for x in xs)}
                      for side, xs in by_side.items()} for path, by_side in samples.items()}
    rows = []
    for path, s in summary.items():
        f, b = s[FLEET], s[BARE]
        rows.append([path, f["rps"], b["rps"], ratio(f["rps"], b["rps"]), f["p50_ms"], b["p50_ms"], f["p99_ms"],
                     b["p99_ms"], f"{f['errors']}/{b['errors']}"])
    table(f"Router: {conns} connections × {seconds:g} s, {tool}, medians of {n_rounds} rounds "
          f"(ratio = fleet / bare)",
          ["path", "fleet req/s", "bare req/s", "ratio", "fleet p50 ms", "bare p50 ms", "fleet p99 ms", "bare p99 ms",
           "non-200 f/b"], rows)

    def chart(plt):
        fig, ax = plt.subplots(figsize=(6, 3.8))
        width = 0.38
        for i, side in enumerate((FLEET, BARE)):
            xs = [g + (i - 0.5) * width for g in range(len(PATHS))]
            ax.bar(xs, [summary[p][side]["rps"] for p in PATHS], width, label=side)
        ax.set_xticks(range(len(PATHS)))
        ax.set_xticklabels(PATHS)
        ax.set_ylabel("requests/s (median)")
        ax.set_title(f"Router throughput, {conns} connections ({tool})")
        ax.legend()
        return fig

    save("router", {"tool": tool, "connections": conns, "seconds": seconds, "rounds": n_rounds,
                    "summary": summary, "samples": samples}, chart, info=info)


def load(tool: str, port: int, path: str, conns: int, seconds: float) -> dict:
    if tool == "wrk":
        return wrk(port, path, conns, seconds)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(hammer(port, path, conns, 1.0))  # warm-up
    return run(hammer(port, path, conns, seconds))


def wrk(port: int, path: str, conns: int, seconds: float) -> dict:
    url = f"http://127.0.0.1:{port}{path}"
    threads = str(min(conns, 2))
    subprocess.run(["wrk", "-t", threads, "-c", str(conns), "-d", "1s", url], capture_output=True)
    out = subprocess.run(["wrk", "-t", threads, "-c", str(conns), "-d", f"{seconds:g}s", "--latency", url],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "errors": int(errors.group(1)) if errors else 0, "wrk": out}


async def hammer(port: int, path: str, conns: int, seconds: float) -> dict:
    """`conns` keep-alive connections, each sending the next request when the last is answered."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\r\n".encode()
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + seconds

    async def connection() -> None:
        reader = writer = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                sent = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length is None:  # not expected from either server: count it and reconnect
                    raise ConnectionError("response without content-length")
                await reader.readexactly(int(length.group(1)))
                latencies.append(time.perf_counter() - sent)
                if head.startswith(b"HTTP/1.1 200"):
                    counts["ok"] += 1
                else:
                    counts["errors"] += 1
                if re.search(rb"(?i)\r\nconnection:\s*close", head):
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                counts["errors"] += 1
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(conns)))
    elapsed = time.perf_counter() - started
    return {"rps": counts["ok"] / elapsed, "requests": counts["ok"], "errors": counts["errors"],
            "seconds": elapsed, "p50_ms": 1000 * (pct(latencies, 50) or 0), "p99_ms": 1000 * (pct(latencies, 99) or 0)}
