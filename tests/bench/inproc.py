"""The benchmarks' in-process side: a warm interpreter that runs mlx-lm directly, no HTTP.

`python tests/bench/inproc.py serve` loads OpenBLAS (`worker.blas.preload_blas`) *before*
MLX, exactly as the fleet's worker does, imports mlx-lm once, and then answers one JSON command
per line on stdin with one JSON line on stdout. The benchmarks keep it running for the whole
session, so "in-process" numbers are those of an interpreter that already has mlx-lm imported:
loading a model, `mlx_lm.stream_generate`, and dropping a model all run here and are timed here.

Why a separate process rather than the pytest process itself: the suite's root conftest imports
`mlx.core` (through `tiny_models`) before any benchmark code runs, and OpenBLAS must be loaded
before `libmlx.so` or MLX keeps its slow reference BLAS. In this process it is loaded first, so
both sides of every comparison run the same BLAS.

`python tests/bench/inproc.py build OUT --kind small --arch llama --seed 0 --dtype float32`
writes a random-weight model directory (the tests' `build_tiny_lm`, scaled by --kind) and exits,
so the memory used to build a big model never stays in a measuring process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from mlx_fleet.worker.blas import preload_blas  # noqa: E402  (imports nothing from MLX)

BLAS = preload_blas()  # before the first `import mlx.core`, or it changes nothing

# Model shapes the benchmarks can ask for: build_tiny_lm's keyword arguments.
SHAPES: dict[str, dict[str, int]] = {
    "tiny": {},  # hidden 64, 2 layers: the test model (overhead dominates)
    "small": {"hidden_size": 768, "num_layers": 8, "intermediate_size": 3072, "num_heads": 12, "num_kv_heads": 4},
    "medium": {"hidden_size": 1024, "num_layers": 16, "intermediate_size": 4096, "num_heads": 16, "num_kv_heads": 4},
    # notes/gpu.md's anchor: llama-shaped, ~1B parameters.
    "big": {"hidden_size": 2048, "num_layers": 16, "intermediate_size": 8192, "num_heads": 32, "num_kv_heads": 8},
}


def build(out: Path, kind: str, arch: str, seed: int, dtype: str) -> dict:
    from tiny_models import build_tiny_lm

    if out.is_dir():
        return {"path": str(out), "built": False}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    build_tiny_lm(tmp, arch=arch, seed=seed, dtype=dtype, **SHAPES[kind])
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    return {"path": str(out), "built": True, "seconds": round(time.perf_counter() - started, 2), "bytes": size}


class Session:
    """The warm interpreter's state: models loaded by key."""

    def __init__(self) -> None:
        import mlx.core as mx
        import mlx_lm
        from mlx_lm import load, stream_generate

        self.mx, self.load_fn, self.stream_generate = mx, load, stream_generate
        self.mlx_lm_version = getattr(mlx_lm, "__version__", "?")
        self.models: dict[str, tuple[object, object]] = {}

    # -- commands ---------------------------------------------------------------------------

    def info(self) -> dict:
        import importlib.metadata as md

        def version(name: str) -> str | None:
            try:
                return md.version(name)
            except md.PackageNotFoundError:
                return None

        return {"pid": os.getpid(), "blas": BLAS, "device": str(self.mx.default_device()),
                "mlx": version("mlx"), "mlx_lm": version("mlx-lm"), "mlx_cuda": version("mlx-cuda-13"),
                "python": sys.version.split()[0]}

    def convert(self, gguf: str, cache_root: str) -> dict:
        from mlx_fleet.worker.gguf.convert import ensure_converted

        started = time.perf_counter()
        path = ensure_converted(Path(gguf), Path(cache_root))
        return {"path": str(path), "seconds": round(time.perf_counter() - started, 2)}

    def load(self, key: str, path: str) -> dict:
        started = time.perf_counter()
        model, tokenizer = self.load_fn(path)
        self.models[key] = (model, tokenizer)
        return {"load_s": time.perf_counter() - started}

    def unload(self, key: str) -> dict:
        """What a single-process server does to drop a model: references, gc, MLX's cache."""
        self.models.pop(key, None)
        gc.collect()
        self.mx.clear_cache()
        return {"rss": _rss()}

    def generate(self, key: str, messages: list[dict], max_tokens: int) -> dict:
        model, tokenizer = self.models[key]
        return self._generate(model, tokenizer, messages, max_tokens, time.perf_counter())

    def cold(self, path: str, messages: list[dict], max_tokens: int = 1) -> dict:
        """Load + first token, as one timed step, then drop the model again."""
        started = time.perf_counter()
        model, tokenizer = self.load_fn(path)
        loaded = time.perf_counter()
        out = self._generate(model, tokenizer, messages, max_tokens, started)
        out["load_s"] = loaded - started
        del model, tokenizer
        gc.collect()
        self.mx.clear_cache()
        return out

    def rss(self) -> dict:
        return {"rss": _rss()}

    # -- helpers ----------------------------------------------------------------------------

    def _generate(self, model, tokenizer, messages, max_tokens, started: float) -> dict:
        # The prompt exactly as the fleet's TextEngine builds it (chat template, then encode).
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        bos = tokenizer.bos_token
        prompt = tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos))
        first_token = first_text = last = None
        pieces: list[str] = []
        count, finish = 0, None
        for r in self.stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
            now = time.perf_counter()
            if first_token is None:
                first_token = now
            if r.text and first_text is None:
                first_text = now
            last = now
            pieces.append(r.text)
            count, finish = r.generation_tokens, r.finish_reason
        # Timed by tokens, not text: a byte-level token that ends mid-character has no text yet
        # (random-weight models emit such tokens for long stretches), and the fleet's stream is
        # timed the same way (its opening chunk goes out with the first token).
        return {
            "ttft": first_token - started,
            "ttft_text": (first_text or first_token) - started,
            "t_first": first_token - started,
            "t_last": last - started,
            "completion_tokens": count,
            "prompt_tokens": len(prompt),
            "finish_reason": finish,
            "text": "".join(pieces),
        }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def serve() -> int:
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    session = Session()
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            proto.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            result = {"ok": True, **getattr(session, op)(**command)}
        except Exception as e:  # noqa: BLE001 - report it to the benchmark, keep serving
            result = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        proto.write(json.dumps(result) + "\n")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="inproc.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve")
    b = sub.add_parser("build")
    b.add_argument("out", type=Path)
    b.add_argument("--kind", default="tiny", choices=sorted(SHAPES))
    b.add_argument("--arch", default="llama")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--dtype", default="float32")
    args = p.parse_args()
    if args.cmd == "serve":
        return serve()
    print(json.dumps(build(args.out, args.kind, args.arch, args.seed, args.dtype)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
