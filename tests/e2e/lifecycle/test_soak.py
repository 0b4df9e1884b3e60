"""Soak ("thrash") test: more models than the memory budget holds, random concurrent traffic.

Five tiny real models, `max_models = 2` plus a byte budget sized by a probe run, a short idle TTL
and a small per-model admission limit. For `SOAK_SECONDS` (default 180) sixteen asyncio clients
send random chat and text completions, streamed and not, some of which hang up mid-stream or
give up on a short client timeout, some in bursts that pass the per-model limit; an admin client
loads (pins) and unloads (with and without `force`) random models; a poller samples the pool's
accounting every 0.5 s and a thread samples the server's process tree every 50 ms.

Invariants checked at the end:

- every request ends (bounded grace after the run; anything still pending is a hang);
- only expected outcomes: 200; 429 rate_limit_exceeded; 503 insufficient_memory / model_unloaded /
  model_load_cooldown; streams end with [DONE] or an error event with one of those codes, unless
  the client itself hung up or timed out; admin calls: 200, 404 model_not_loaded, 503 as above;
- the pool's `in_use` (and the RSS of every worker process) stays within 1.1 x the budget;
- the serve tree never holds more than `max_models + 2` workers (the warm spare and stopping
  workers included), and never two processes for one model; after stop nothing is left;
- after unloading everything, only the warm spare is accounted, every model is "stopped", and the
  machine's available memory is back near where it started.

A summary is printed (run with -s); its figures go into the project's notes.

Run: `SOAK_SECONDS=60 .venv/bin/python -m pytest tests/e2e/lifecycle/test_soak.py -m slow -s -q -p no:cacheprovider`
(`SOAK_SEED` changes the traffic, `SOAK_PROBE_SECONDS` the probe's traffic, default 25).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from fleet_server import FleetServer, admin, alive, by_id, wait_gone, write_config
from tiny_models import build_tiny_lm

MiB = 2**20
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "180"))
CLIENTS = 16
MODELS = [f"m{i}" for i in range(5)]
# A hot model or two, so the per-model admission limit (8) is reached now and then.
MODEL_WEIGHTS = [0.35, 0.25, 0.15, 0.15, 0.10]
MAX_MODELS = 2
MAX_REQUESTS_PER_MODEL = 8
IDLE_TTL = "3s"
# After the run, how long requests still open may take to end. A drained worker gets the
# supervisor's drain timeout (60 s) and a load waiting for room gives up after drain + stop grace
# (70 s), so a request that legitimately waits ends well within this.
GRACE_SECONDS = 150.0
# Normal requests' client timeout: longer than the grace, so a hang shows as a pending task.
NORMAL_TIMEOUT = GRACE_SECONDS + 60
POLL_INTERVAL = 0.5
PROBE_SECONDS = float(os.environ.get("SOAK_PROBE_SECONDS", "25"))
MEMORY_TOLERANCE = 1.10
# The machine's available memory moves by up to ~300 MB on its own on this VM.
MACHINE_MARGIN = 500 * MiB

HTTP_EXPECTED = {
    429: {"rate_limit_exceeded"},
    503: {"insufficient_memory", "model_unloaded", "model_load_cooldown"},
}
STREAM_ERROR_EXPECTED = {"insufficient_memory", "model_unloaded", "model_load_cooldown"}
ADMIN_EXPECTED = {
    "load": {200: {None}, 503: {"insufficient_memory", "model_unloaded", "model_load_cooldown"}},
    "unload": {200: {None}, 404: {"model_not_loaded"}},
}

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing "
         "matches near the old harbour as rain falls on paper lanterns").split()


@dataclass
class Outcome:
    mode: str            # normal | disconnect | short_timeout | burst
    route: str           # chat | completions
    stream: bool
    model: str
    max_tokens: int
    status: int | None = None
    code: str | None = None
    end: str = ""        # json | done | error_event | truncated | client_disconnect | client_timeout | exception
    detail: str = ""
    chunks: int = 0
    seconds: float = 0.0

    def key(self) -> str:
        if self.end in ("client_disconnect", "client_timeout", "exception"):
            return self.end
        if self.status == 200 and self.stream:
            return f"200 stream {self.end}" + (f" {self.code}" if self.code else "")
        return f"{self.status} {self.code or ''}".strip()

    def problem(self) -> str | None:
        """Why this outcome breaks the contract, or None."""
        if self.end == "client_timeout":
            return None if self.mode == "short_timeout" else "client timeout on a normal request (hang?)"
        if self.end == "exception":
            return f"transport error: {self.detail}"
        if self.end == "client_disconnect":
            return None if self.mode == "disconnect" else "disconnect outside disconnect mode"
        if self.status == 200:
            if not self.stream:
                return None if self.end == "json" else f"bad 200 body: {self.detail}"
            if self.end == "done":
                return None
            if self.end == "error_event":
                return None if self.code in STREAM_ERROR_EXPECTED else f"unexpected stream error code {self.code}"
            return f"stream ended without [DONE] or an error event ({self.end}): {self.detail}"
        if self.code in HTTP_EXPECTED.get(self.status, ()):
            return None
        return f"unexpected HTTP {self.status} {self.code}: {self.detail}"


@dataclass
class AdminOutcome:
    verb: str
    model: str
    force: bool
    status: int | None
    code: str | None
    detail: str
    seconds: float

    def problem(self) -> str | None:
        if self.status is None:
            return f"admin {self.verb} transport error: {self.detail}"
        if self.code in ADMIN_EXPECTED[self.verb].get(self.status, ()):
            return None
        return f"admin {self.verb} {self.model}: unexpected {self.status} {self.code}: {self.detail}"


@dataclass
class Samples:
    pool: list[tuple[float, int, int]] = field(default_factory=list)  # (t, in_use, budget)
    measured_all: list[int] = field(default_factory=list)  # sum of measured over every model, stopping ones too
    loaded: list[int] = field(default_factory=list)
    workers: list[int] = field(default_factory=list)
    worker_rss: list[int] = field(default_factory=list)  # RSS of every worker process, the spare too
    worker_pids: set[int] = field(default_factory=set)
    processes: dict[int, psutil.Process] = field(default_factory=dict)  # every process seen in the tree
    states: collections.Counter = field(default_factory=collections.Counter)
    status_errors: list[str] = field(default_factory=list)
    peak: str = ""  # the models at the sample with the most memory in use
    last_states: str = ""
    most_workers: str = ""  # the worker processes at the sample with the most of them


def is_worker(p: psutil.Process) -> bool:
    try:
        cmd = p.cmdline()
        return p.status() != psutil.STATUS_ZOMBIE and "-m" in cmd and "mlx_fleet.worker" in cmd
    except psutil.Error:
        return False


def error_code(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
        err = body["error"]
        assert set(err) >= {"message", "type", "param", "code"}
        return err["code"], err["message"][:200]
    except Exception as e:  # noqa: BLE001 - any non-envelope body is itself the finding
        return "<not-an-envelope>", f"{type(e).__name__}: {response.text[:200]!r}"


def prompt(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40)))


def request_body(rng: random.Random, route: str, model: str, stream: bool, max_tokens: int) -> dict:
    body: dict = {"model": model, "max_tokens": max_tokens, "temperature": round(rng.uniform(0.0, 1.5), 2),
                  "stream": stream}
    if route == "chat":
        body["messages"] = [{"role": "user", "content": prompt(rng)}]
        if rng.random() < 0.3:
            body["messages"] = [{"role": "system", "content": prompt(rng)}, *body["messages"]]
    else:
        body["prompt"] = prompt(rng)
    if rng.random() < 0.3:
        body["seed"] = rng.randint(0, 2**31 - 1)
    if rng.random() < 0.3:
        body["top_p"] = round(rng.uniform(0.5, 1.0), 2)
    if stream and rng.random() < 0.5:
        body["stream_options"] = {"include_usage": True}
    return body


async def one_request(http: httpx.AsyncClient, rng: random.Random, mode: str, model: str | None = None,
                      stream: bool | None = None, max_tokens: int | None = None) -> Outcome:
    route = "chat" if rng.random() < 0.75 else "completions"
    model = model or rng.choices(MODELS, MODEL_WEIGHTS)[0]
    if stream is None:
        stream = mode == "disconnect" or rng.random() < 0.6
    max_tokens = max_tokens or rng.randint(1, 300)
    out = Outcome(mode, route, stream, model, max_tokens)
    body = request_body(rng, route, model, stream, max_tokens)
    url = "/v1/chat/completions" if route == "chat" else "/v1/completions"
    timeout = rng.uniform(0.2, 2.0) if mode == "short_timeout" else NORMAL_TIMEOUT
    hang_up_after = rng.randint(1, 5) if mode == "disconnect" else None
    started = time.monotonic()
    try:
        if not stream:
            await post_for_json(http, url, body, timeout, out)
        else:
            await post_for_stream(http, url, body, timeout, out, hang_up_after)
    except httpx.TimeoutException as e:
        out.end, out.detail = "client_timeout", type(e).__name__
    except httpx.HTTPError as e:
        out.end, out.detail = "exception", f"{type(e).__name__}: {e}"
    out.seconds = time.monotonic() - started
    return out


async def post_for_json(http: httpx.AsyncClient, url: str, body: dict, timeout: float, out: Outcome) -> None:
    """A request not streamed: its status, and whether its body is a well-formed answer or error."""
    r = await http.post(url, json=body, timeout=timeout)
    out.status = r.status_code
    if r.status_code == 200:
        out.end = "json"
        try:
            data = r.json()
            choice = data["choices"][0]
            assert choice["finish_reason"] in ("stop", "length"), choice["finish_reason"]
            assert data["usage"]["completion_tokens"] <= out.max_tokens, data["usage"]
        except Exception as e:  # noqa: BLE001
            out.end, out.detail = "bad_json", f"{type(e).__name__}: {e}: {r.text[:200]!r}"
    else:
        out.end = "json"
        out.code, out.detail = error_code(r)


async def post_for_stream(http: httpx.AsyncClient, url: str, body: dict, timeout: float, out: Outcome,
                          hang_up_after: int | None) -> None:
    """A streamed request: its status, then how its stream ends (or where the client hangs up)."""
    async with http.stream("POST", url, json=body, timeout=timeout) as r:
        out.status = r.status_code
        if r.status_code != 200:
            await r.aread()
            out.end = "json"
            out.code, out.detail = error_code(r)
        else:
            await read_stream(r, out, hang_up_after)


async def read_stream(r: httpx.Response, out: Outcome, hang_up_after: int | None) -> None:
    """The stream's events into `out`: its chunks, then [DONE], an error event, or nothing more."""
    out.end = "truncated"
    finished = False
    async for line in r.aiter_lines():
        if not line.startswith("data: "):
            continue
        payload = line[len("data: "):]
        if out.end != "truncated":
            out.end, out.detail = "after_end", f"data after the end of the stream: {payload[:120]}"
            break
        if payload == "[DONE]":
            out.end = "done" if finished else "done_without_finish_reason"
            continue
        event = json.loads(payload)
        if "error" in event:
            out.end, out.code = "error_event", event["error"].get("code")
            out.detail = event["error"].get("message", "")[:200]
            continue
        out.chunks += 1
        if any(c.get("finish_reason") for c in event.get("choices", [])):
            finished = True
        if hang_up_after is not None and out.chunks >= hang_up_after:
            out.end = "client_disconnect"
            break  # leaving the context closes the response: the server sees a hang-up


class TreeWatch(threading.Thread):
    """Samples the serve tree's worker processes every 50 ms (finer than the status poller), so
    that a short overlap (two workers of one model, too many workers) is seen."""

    def __init__(self, server: FleetServer, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.halt = threading.Event()
        self.info: dict[int, dict] = {}          # pid -> label, ppid, first and last seen
        self.snapshots: list[tuple[float, frozenset[int]]] = []  # each change of the set of workers
        self.count = 0
        self.max_workers = 0
        self.supervisor_pid: int | None = None

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)

    def sample(self) -> None:
        """Workers are the supervisor's children with a worker command line. A process with that
        command line whose parent is a worker is a fork on its way to exec (the worker runs
        `ldconfig -p` through ctypes.util.find_library when it looks for OpenBLAS): recorded, not
        counted."""
        now, pids = time.monotonic(), set()
        tree = self.server.tree()
        for p in tree:
            with contextlib.suppress(psutil.Error):
                if "-m" in (cmd := p.cmdline()) and "mlx_fleet.supervisor" in cmd:
                    self.supervisor_pid = p.pid
        for p in tree:
            try:
                cmd = p.cmdline()
                if not is_worker(p):
                    continue
                if p.pid not in self.info:
                    label = ("spare" if "--spare" in cmd else
                             cmd[cmd.index("--model-id") + 1] if "--model-id" in cmd else "?")
                    self.info[p.pid] = {"label": label, "ppid": p.ppid(), "first": now}
                self.info[p.pid]["last"] = now
                if self.info[p.pid]["ppid"] == self.supervisor_pid:
                    pids.add(p.pid)
            except (psutil.Error, ValueError, IndexError):
                pass
        self.count += 1
        self.max_workers = max(self.max_workers, len(pids))
        if not self.snapshots or self.snapshots[-1][1] != pids:
            self.snapshots.append((now, frozenset(pids)))

    def model_of(self, pid: int, assigned: dict[int, str]) -> str:
        label = self.info[pid]["label"]
        return assigned.get(pid, "spare") if label == "spare" else label

    def overlaps(self, assigned: dict[int, str]) -> list[str]:
        """Samples in which one model had two worker processes."""
        out = []
        for t, pids in self.snapshots:
            models = collections.Counter(self.model_of(pid, assigned) for pid in pids)
            twice = [m for m, n in models.items() if n > 1 and m != "spare"]
            if twice:
                out.append(f"t={t:.2f}: " + ", ".join(
                    f"{pid} {self.model_of(pid, assigned)} (parent {self.info[pid]['ppid']}, seen "
                    f"{self.info[pid]['first']:.2f}-{self.info[pid]['last']:.2f})" for pid in sorted(pids)))
        return out

    def forks(self) -> list[dict]:
        """Processes with a worker's command line that are not the supervisor's children."""
        return [{"pid": pid, **v, "parent_label": self.info.get(v["ppid"], {}).get("label", "not a worker")}
                for pid, v in self.info.items() if v["ppid"] != self.supervisor_pid]


class Soak:
    def __init__(self, server: FleetServer, seed: int) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.outcomes: list[Outcome] = []
        self.admin: list[AdminOutcome] = []
        self.samples = Samples()
        self.pending: dict[asyncio.Task, str] = {}
        self.end_at = 0.0
        self.watch = TreeWatch(server)
        self.assigned: dict[int, str] = {}  # worker pid -> model, from the status (spare-born workers)

    def track(self, coro, label: str) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.pending[task] = label
        task.add_done_callback(lambda t: self.pending.pop(t, None))
        return task

    async def client(self, http: httpx.AsyncClient, index: int) -> None:
        rng = random.Random(self.rng.random())
        while time.monotonic() < self.end_at:
            roll = rng.random()
            if roll < 0.03:  # a burst at one model: more than the per-model admission limit at once
                model = rng.choice(MODELS[:2])
                tasks = [self.track(one_request(http, rng, "burst", model=model, stream=rng.random() < 0.5,
                                                max_tokens=rng.randint(1, 40)), f"client {index} burst {model}")
                         for _ in range(MAX_REQUESTS_PER_MODEL + 2)]
                self.outcomes.extend(await asyncio.gather(*tasks))
            else:
                mode = "disconnect" if roll < 0.25 else "short_timeout" if roll < 0.35 else "normal"
                self.outcomes.append(await self.track(one_request(http, rng, mode), f"client {index} {mode}"))
            await asyncio.sleep(rng.uniform(0.0, 0.3))

    async def admin_call(self, http: httpx.AsyncClient, verb: str, model: str, force: bool = False) -> AdminOutcome:
        started = time.monotonic()
        params = {"force": "true"} if force else {}
        try:
            r = await http.post(f"/admin/models/{verb}/{model}", params=params, timeout=NORMAL_TIMEOUT)
            code, detail = (None, "") if r.status_code == 200 else error_code(r)
            out = AdminOutcome(verb, model, force, r.status_code, code, detail, time.monotonic() - started)
        except httpx.HTTPError as e:
            out = AdminOutcome(verb, model, force, None, None, f"{type(e).__name__}: {e}", time.monotonic() - started)
        self.admin.append(out)
        return out

    async def admin_loop(self, http: httpx.AsyncClient) -> None:
        rng = random.Random(self.rng.random())
        pinned: tuple[str, float] | None = None
        while time.monotonic() < self.end_at:
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            if time.monotonic() >= self.end_at:
                break
            if pinned is not None and time.monotonic() - pinned[1] > 4.0:
                await self.admin_call(http, "unload", pinned[0], force=rng.random() < 0.5)
                pinned = None
                continue
            roll = rng.random()
            if roll < 0.3 and pinned is None:
                model = rng.choice(MODELS)
                out = await self.admin_call(http, "load", model)
                if out.status == 200:
                    pinned = (model, time.monotonic())
                continue
            try:
                status = (await http.get("/admin/models/status", timeout=30)).json()
                loaded = [m["id"] for m in status["models"] if m["pid"] is not None]
            except (httpx.HTTPError, ValueError, KeyError):
                loaded = []
            model = rng.choice(loaded) if loaded and rng.random() < 0.85 else rng.choice(MODELS)
            await self.admin_call(http, "unload", model, force=roll < 0.65)
            if pinned is not None and pinned[0] == model:
                pinned = None
        if pinned is not None:
            await self.admin_call(http, "unload", pinned[0])

    def sample_tree(self) -> None:
        workers, rss, labels = 0, 0, []
        for p in self.server.tree():
            self.samples.processes.setdefault(p.pid, p)
            with contextlib.suppress(psutil.Error):
                if self.watch.supervisor_pid is not None and p.ppid() != self.watch.supervisor_pid:
                    continue  # a worker's fork on its way to exec, or the supervisor itself
            if is_worker(p):
                workers += 1
                self.samples.worker_pids.add(p.pid)
                try:
                    rss += p.memory_info().rss
                    cmd = p.cmdline()
                    labels.append(f"{p.pid} " + ("spare-born" if "--spare" in cmd else cmd[cmd.index("--model-id") + 1]
                                                 if "--model-id" in cmd else "?") + f" (parent {p.ppid()})")
                except (psutil.Error, IndexError):
                    pass
        if workers > max(self.samples.workers, default=0):
            self.samples.most_workers = f"[{', '.join(labels)}] with models {self.samples.last_states}"
        self.samples.workers.append(workers)
        self.samples.worker_rss.append(rss)

    async def poller(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                r = await http.get("/admin/models/status", timeout=10)
                status = r.json()
                pool = status["pool"]
                if pool["in_use"] > max((u for _, u, _ in self.samples.pool), default=0):
                    self.samples.peak = ", ".join(
                        f"{m['id']} {m['state']} {(m['memory']['measured'] or 0) / MiB:.0f}/"
                        f"{(m['memory']['estimated'] or 0) / MiB:.0f} MiB"
                        f"{' pinned' if m['pinned'] else ''} in_flight {m['in_flight']}"
                        for m in status["models"] if m["state"] != "stopped")
                self.samples.pool.append((time.monotonic(), pool["in_use"], pool["budget"]))
                self.samples.loaded.append(pool["loaded"])
                self.samples.measured_all.append(sum(m["memory"]["measured"] or 0 for m in status["models"]))
                self.samples.states.update(m["state"] for m in status["models"])
                self.assigned.update({m["pid"]: m["id"] for m in status["models"] if m["pid"] is not None})
                spare = pool.get("spare") or {}
                self.samples.last_states = ", ".join(
                    [f"{m['id']} {m['state']} pid {m['pid']}" for m in status["models"] if m["state"] != "stopped"]
                    + ([f"spare {spare.get('state')} pid {spare.get('pid')}"] if spare else []))
            except (httpx.HTTPError, ValueError, KeyError) as e:
                self.samples.status_errors.append(f"{type(e).__name__}: {e}")
            self.sample_tree()
            try:
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL)
            except TimeoutError:
                pass

    async def run(self, seconds: float) -> list[str]:
        """Run the traffic; returns the labels of requests that did not end within the grace."""
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.server.base_url, limits=limits) as http, \
                httpx.AsyncClient(base_url=self.server.base_url) as admin_http, \
                httpx.AsyncClient(base_url=self.server.base_url) as poll_http:
            stop_polling = asyncio.Event()
            poller = asyncio.create_task(self.poller(poll_http, stop_polling))
            self.watch.start()
            self.end_at = time.monotonic() + seconds
            loops = [asyncio.create_task(self.client(http, i)) for i in range(CLIENTS)]
            loops.append(asyncio.create_task(self.admin_loop(admin_http)))
            await asyncio.sleep(seconds)
            done, still = await asyncio.wait(loops, timeout=GRACE_SECONDS)
            hung = sorted(self.pending.values())
            if still and not hung:
                hung = [f"client loop {t.get_name()}" for t in still]
            for task in [*still, *self.pending]:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()
            stop_polling.set()
            await poller
            self.watch.halt.set()
            self.watch.join()
        return hung


async def in_service_peak(server: FleetServer, models: list[str], seconds: float) -> tuple[int, int]:
    """Soak-like traffic (a full admission's worth of mixed requests at each of `models`) for
    `seconds`; returns the largest footprint any of them reached and the warm spare's size."""
    rng = random.Random(7)
    end = time.monotonic() + seconds
    peak, spare = 0, 0
    async with httpx.AsyncClient(base_url=server.base_url, timeout=NORMAL_TIMEOUT) as http:
        async def traffic(model: str) -> None:
            while time.monotonic() < end:
                out = await one_request(http, rng, rng.choice(["normal", "normal", "disconnect"]), model=model)
                assert out.problem() is None and out.status == 200, out

        async def watch() -> None:
            nonlocal peak, spare
            while time.monotonic() < end + 2.0:  # and a last re-measure after the traffic
                status = (await http.get("/admin/models/status")).json()
                peak = max([peak, *(m["memory"]["measured"] or 0 for m in status["models"])])
                spare = max(spare, (status["pool"].get("spare") or {}).get("memory") or 0)
                await asyncio.sleep(POLL_INTERVAL)

        await asyncio.gather(watch(), *(traffic(m) for m in models for _ in range(MAX_REQUESTS_PER_MODEL)))
    return peak, spare


def serve_rss(server: FleetServer) -> dict[str, int]:
    """RSS of the router (the serve process) and the supervisor: what stays when no model runs."""
    out = {}
    for p in server.tree():
        with contextlib.suppress(psutil.Error):
            cmd = p.cmdline()
            if p.pid == server.proc.pid:
                out["router"] = p.memory_info().rss
            elif "-m" in cmd and "mlx_fleet.supervisor" in cmd:
                out["supervisor"] = p.memory_info().rss
    return out


def machine_available_settled(baseline: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        available = psutil.virtual_memory().available
        if baseline - available < MACHINE_MARGIN or time.monotonic() > deadline:
            return available
        time.sleep(0.25)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_SECONDS + GRACE_SECONDS + 600))
def test_soak_more_models_than_memory(tmp_path: Path) -> None:
    models = {name: build_tiny_lm(tmp_path / "models" / name, seed=i) for i, name in enumerate(MODELS)}
    state = tmp_path / "state"
    probe = probe_footprints(tmp_path, models, state)

    extra = (f'[server]\nmax_requests_per_model = {MAX_REQUESTS_PER_MODEL}\n\n'
             f'[memory]\nbudget = "{probe.budget}B"\nmax_models = {MAX_MODELS}\nidle_ttl = "{IDLE_TTL}"\n')
    config = write_config(tmp_path / "fleet.toml", models, extra)
    server = FleetServer(config, state).wait_ready()
    soak = Soak(server, seed=int(os.environ.get("SOAK_SEED", "20261122")))
    run = soak_then_stop(server, soak, tmp_path)
    found = Findings.of(soak, run, probe.budget)
    print_summary(soak, probe, run, found)

    after, samples = run.after, soak.samples
    assert not run.hung, f"{len(run.hung)} requests never ended: {run.hung[:20]}"
    assert not found.problems, f"{len(found.problems)} unexpected outcomes: {found.problems[:20]}"
    assert not found.admin_problems, found.admin_problems[:20]
    assert soak.outcomes and found.by_key.get("200 stream done", 0) and found.by_key.get("200", 0), found.by_key
    assert found.max_in_use <= MEMORY_TOLERANCE * found.max_budget, (found.max_in_use, found.max_budget,
                                                                     found.over[:10])
    assert found.max_workers <= MAX_MODELS + 2, (samples.workers, samples.most_workers)
    assert max(samples.worker_rss, default=0) <= MEMORY_TOLERANCE * found.max_budget
    assert not found.overlaps, found.overlaps[:10]
    assert not found.foreign, found.foreign
    assert after.models_in_use == 0 and set(after.states.values()) == {"stopped"}, (after.status, after.states)
    assert not after.workers
    assert run.machine_before - after.machine < MACHINE_MARGIN, (run.machine_before, after.machine)
    assert not run.left_in_tree, run.left_in_tree
    assert not run.strays, run.strays
    assert not samples.status_errors, samples.status_errors[:5]


@dataclass
class Probe:
    """What the probe run measured (bytes), and the soak's budget sized from it."""

    at_ready: dict[str, int]  # each model just loaded
    peak: int                 # a model in service, at its largest
    spare: int                # the warm spare
    budget: int


def probe_footprints(tmp_path: Path, models: dict[str, Path], state: Path) -> Probe:
    """Load each model once so its measured footprint is remembered in the state directory (the
    soak server's estimates are then exact), then size the soak's budget.

    A worker in service grows far past that just-loaded size (its prompt cache, the batch's KV
    caches, MLX's buffer cache and the allocator's heap: a tiny model's ~100 MiB reaches ~300 MiB
    under 8 concurrent requests), and the supervisor can only trim idle workers when busy ones
    grow. So the probe also runs soak-like traffic at two models and the budget holds two models at
    that in-service peak (+25 %) plus the warm spare; `max_models = 2` is what really keeps a third
    one out.
    """
    probe = FleetServer(write_config(tmp_path / "probe.toml", models, f"[memory]\nmax_models = {len(MODELS)}\n"),
                        state).wait_ready()
    try:
        for model in MODELS:
            r = httpx.post(f"{probe.base_url}/v1/chat/completions", timeout=120, json={
                "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3})
            assert r.status_code == 200, r.text
        at_ready = {k: v["memory"]["measured"] for k, v in by_id(admin(probe, "status").json()).items()}
        peak, spare = asyncio.run(in_service_peak(probe, MODELS[:2], PROBE_SECONDS))
    finally:
        probe.stop()
    assert all(at_ready.values()) and peak, (at_ready, peak)
    return Probe(at_ready, peak, spare, 2 * int(1.25 * peak) + spare + min(at_ready.values()) // 2)


@dataclass
class AfterUnload:
    """The server after the run, once everything still loaded is unloaded."""

    unloads: list[tuple[str, int]]  # the unloads that took (model, status)
    status: dict
    states: dict[str, str]
    in_use: int
    spare: dict                     # the warm spare (a worker with MLX imported and no model) stays, and counts
    models_in_use: int
    workers: list[int]              # worker processes other than the spare
    machine: int                    # the machine's available memory, settled
    serve_rss: dict[str, int]


@dataclass
class Run:
    """The soak run: its start and wall time, the requests that never ended, the baseline, the
    server after unloading everything, and what outlived the server."""

    started: float
    wall: float
    hung: list[str]
    machine_before: int
    serve_rss_before: dict[str, int]
    after: AfterUnload
    log_text: str
    all_seen: list[psutil.Process]
    left_in_tree: list[psutil.Process]
    strays: list[str]


def soak_then_stop(server: FleetServer, soak: Soak, tmp_path: Path) -> Run:
    """From the idle baseline, the soak; then back to baseline, and the server stopped."""
    runtime_dir = None
    stopped = False
    try:
        for p in server.tree():
            cmd = p.cmdline()
            if "--runtime-dir" in cmd:
                runtime_dir = cmd[cmd.index("--runtime-dir") + 1]
        assert runtime_dir, "could not find the supervisor's runtime directory"
        wait_for_ready_spare(server)
        time.sleep(1.0)
        machine_before = psutil.virtual_memory().available
        serve_rss_before = serve_rss(server)

        started = time.monotonic()
        hung = asyncio.run(soak.run(SOAK_SECONDS))
        wall = time.monotonic() - started

        after = unload_everything(server, soak, machine_before)
        log_text = server.log_path.read_text(errors="replace")
        all_seen = list(soak.samples.processes.values())
        server.stop()
        stopped = True
        left_in_tree = wait_gone(all_seen)
        strays = processes_naming([str(tmp_path), runtime_dir])
    finally:
        if not stopped:
            server.stop()
    return Run(started, wall, hung, machine_before, serve_rss_before, after, log_text, all_seen, left_in_tree, strays)


def wait_for_ready_spare(server: FleetServer) -> None:
    """The baseline: the server idle, its warm spare (if it makes one) started and ready."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        spare_now = admin(server, "status").json()["pool"].get("spare")
        if spare_now is None or spare_now.get("state") == "ready":
            break
        time.sleep(0.2)


def unload_everything(server: FleetServer, soak: Soak, machine_before: int) -> AfterUnload:
    """Back to baseline: unload whatever is still loaded, then everything must be stopped."""
    unloads = []
    for m in admin(server, "status").json()["models"]:
        if m["pid"] is not None:
            r = admin(server, "unload", m["id"])
            unloads.append((m["id"], r.status_code))
    final = admin(server, "status").json()
    states = {k: m["state"] for k, m in by_id(final).items()}
    in_use = final["pool"]["in_use"]
    spare = final["pool"].get("spare") or {}
    models_in_use = in_use - (spare.get("memory") or 0)
    soak.sample_tree()
    workers = [p.pid for p in server.tree() if is_worker(p) and p.pid != spare.get("pid")]
    machine = machine_available_settled(machine_before)
    return AfterUnload(unloads, final, states, in_use, spare, models_in_use, workers, machine, serve_rss(server))


def processes_naming(needles: list[str]) -> list[str]:
    """Live processes (this one aside) whose command line names one of `needles`."""
    strays = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.pid != os.getpid() and any(n in cmd for n in needles) and alive([p]):
            strays.append(f"{p.pid}: {cmd[:160]}")
    return strays


@dataclass
class Findings:
    """The figures and violations the run's samples and outcomes add up to."""

    by_key: collections.Counter
    problems: list[str]
    admin_problems: list[str]
    max_in_use: int
    max_budget: int
    over: list[tuple[float, int]]  # (seconds into the run, in_use) where in_use passed the budget
    max_workers: int
    overlaps: list[str]
    forks: list[dict]
    foreign: list[str]
    ok_seconds: list[float]
    error_lines: list[str]

    @classmethod
    def of(cls, soak: Soak, run: Run, budget: int) -> Findings:
        outcomes, samples = soak.outcomes, soak.samples
        forks = soak.watch.forks()
        return cls(
            by_key=collections.Counter(o.key() for o in outcomes),
            problems=[f"{o.mode} {o.route} stream={o.stream} {o.model}: {p}" for o in outcomes if (p := o.problem())],
            admin_problems=[p for a in soak.admin if (p := a.problem())],
            max_in_use=max((s[1] for s in samples.pool), default=0),
            max_budget=max((s[2] for s in samples.pool), default=budget),
            over=[(round(t - run.started, 1), u) for t, u, b in samples.pool if u > b],
            max_workers=max(soak.watch.max_workers, max(samples.workers, default=0)),
            overlaps=soak.watch.overlaps(soak.assigned),
            forks=forks,
            foreign=[f"{f['pid']} {f['label']} parent {f['ppid']} ({f['parent_label']}), seen for "
                     f"{f['last'] - f['first']:.2f} s" for f in forks
                     if f["parent_label"] == "not a worker" or f["last"] - f["first"] > 2.0],
            ok_seconds=[o.seconds for o in outcomes if o.status == 200 and o.end in ("json", "done")],
            error_lines=[ln for ln in run.log_text.splitlines() if " ERROR " in ln or "Traceback" in ln],
        )


def print_summary(soak: Soak, probe: Probe, run: Run, found: Findings) -> None:
    """The summary (figures for the project's closing note)."""
    print("\n======================== mlx-fleet soak summary ========================")
    print_traffic(soak, probe, run, found)
    print_resources(soak, found)
    print_aftermath(soak, run, found)
    print("=========================================================================")


def print_traffic(soak: Soak, probe: Probe, run: Run, found: Findings) -> None:
    outcomes, admin_calls, by_key, ok_seconds = soak.outcomes, soak.admin, found.by_key, found.ok_seconds
    print(f"duration {SOAK_SECONDS:.0f} s (wall incl. grace {run.wall:.1f} s); {CLIENTS} clients; "
          f"{len(MODELS)} models; max_models {MAX_MODELS}; max_requests_per_model {MAX_REQUESTS_PER_MODEL}; "
          f"idle_ttl {IDLE_TTL}")
    print("model sizes measured by the probe: just loaded (MiB) " + ", ".join(
        f"{k} {probe.at_ready[k] / MiB:.0f}" for k in MODELS)
        + f"; in service peak {probe.peak / MiB:.0f} MiB; warm spare {probe.spare / MiB:.0f} MiB; "
          f"budget = 2 x 1.25 x peak + spare + min/2 = {probe.budget / MiB:.1f} MiB")
    print(f"requests: {len(outcomes)} total; by mode: "
          + ", ".join(f"{k} {v}" for k, v in sorted(collections.Counter(o.mode for o in outcomes).items())))
    print("outcomes:")
    for key, count in sorted(by_key.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {key}")
    reasons = collections.Counter(
        "waiting for a drain" if "waiting for room" in o.detail else
        "pinned and loading" if "pinned:" in o.detail and "loading:" in o.detail else
        "pinned" if "pinned:" in o.detail else "loading" if "loading:" in o.detail else o.detail[:80]
        for o in outcomes if o.code == "insufficient_memory")
    print(f"insufficient_memory because of: {dict(reasons)}")
    example = next((o.detail for o in outcomes if o.code == "insufficient_memory"), "")
    if example:
        print(f"  e.g. {example[:200]}")
    truncated = sum(1 for o in outcomes if o.stream and o.status == 200
                    and o.end not in ("done", "error_event", "client_disconnect", "client_timeout"))
    print(f"client disconnects mid-stream: {by_key['client_disconnect']}; client timeouts: "
          f"{by_key['client_timeout']}; truncated streams: {truncated}")
    print(f"latency of successful requests: p50 {statistics.median(ok_seconds) if ok_seconds else 0:.2f} s, "
          f"p95 {percentile(ok_seconds, 0.95):.2f} s, max {max(ok_seconds, default=0):.2f} s")
    print(f"admin calls: {len(admin_calls)}: " + ", ".join(
        f"{k} {v}" for k, v in sorted(collections.Counter(
            f"{a.verb}{'(force)' if a.force else ''} {a.status}{' ' + a.code if a.code else ''}"
            for a in admin_calls).items())))


def print_resources(soak: Soak, found: Findings) -> None:
    samples, forks, max_in_use, max_budget = soak.samples, found.forks, found.max_in_use, found.max_budget
    print(f"memory: budget {max_budget / MiB:.1f} MiB; max pool in_use {max_in_use / MiB:.1f} MiB "
          f"({max_in_use / max_budget:.3f} x budget); samples over budget: {len(found.over)}; max measured incl. "
          f"stopping workers {max(samples.measured_all, default=0) / MiB:.1f} MiB; "
          f"{len(samples.pool)} samples; max RSS of all worker processes (stopping ones and the spare too) "
          f"{max(samples.worker_rss, default=0) / MiB:.1f} MiB")
    print(f"  at the peak (measured/estimated): {samples.peak}")
    print(f"workers: max seen at once {found.max_workers} (limit {MAX_MODELS + 2}; {soak.watch.count} tree samples "
          f"every 50 ms); distinct worker processes started {len(soak.watch.info)}; max loaded per status "
          f"{max(samples.loaded, default=0)}; samples where one model had two processes: {len(found.overlaps)}; "
          f"worker forks on their way to exec: {len(forks) - len(found.foreign)} (longest seen "
          f"{max((f['last'] - f['first'] for f in forks), default=0):.2f} s); other processes with a "
          f"worker's command line: {len(found.foreign)}")
    for line in (found.overlaps[:5] + found.foreign[:5]):
        print(f"  ! {line}")
    print(f"  at the most workers: {samples.most_workers}")
    print(f"states sampled: {dict(samples.states)}")


def print_aftermath(soak: Soak, run: Run, found: Findings) -> None:
    after = run.after
    print(f"after unloading everything: pool in_use {after.in_use} B, of which the warm spare "
          f"{after.spare.get('memory') or 0} B (pid {after.spare.get('pid')}), models {after.models_in_use} B; "
          f"states {set(after.states.values())}; other workers left {after.workers}; "
          f"unloads needed {after.unloads}")
    print(f"machine available memory: before {run.machine_before / MiB:.0f} MiB, after {after.machine / MiB:.0f} MiB "
          f"(change {(after.machine - run.machine_before) / MiB:+.0f} MiB; margin {MACHINE_MARGIN / MiB:.0f} MiB)")
    print("router/supervisor RSS before -> after: " + ", ".join(
        f"{k} {run.serve_rss_before.get(k, 0) / MiB:.0f} -> {after.serve_rss.get(k, 0) / MiB:.0f} MiB"
        for k in ("router", "supervisor")))
    print(f"processes leaked: {len(run.left_in_tree)} from the serve tree ({len(run.all_seen)} seen), "
          f"{len(run.strays)} by cmdline")
    print(f"hung requests: {len(run.hung)}; contract violations: {len(found.problems)}; admin violations: "
          f"{len(found.admin_problems)}; status poll errors: {len(soak.samples.status_errors)}; "
          f"ERROR/Traceback lines in the server log: {len(found.error_lines)}")
    for line in (found.problems + found.admin_problems)[:20]:
        print(f"  ! {line}")
    for line in found.error_lines[:10]:
        print(f"  log: {line[:300]}")
