"""Where a single stream's time goes, without HTTP: mlx-lm's stream_generate against the worker's
TextEngine driven the way the worker drives it (poll, step, emit), on the same model, alternating.
Usage: python tests/bench/engine_probe.py MODEL_DIR [max_tokens] — prints decode tok/s and TTFT."""

from __future__ import annotations

import statistics
import sys
import time

import zmq

from mlx_fleet.worker.blas import preload_blas

preload_blas()

from mlx_lm import load, stream_generate  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from mlx_fleet.protocol import ChatInput, Generate, Message, Sampling  # noqa: E402
from mlx_fleet.worker.engines.text import TextEngine  # noqa: E402


def main() -> None:
    path, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 128
    model, tokenizer = load(path)
    engine = TextEngine(model, tokenizer, 4096)
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pull.bind("inproc://probe")
    push.connect("inproc://probe")
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    results: dict[str, list[tuple[float, float]]] = {"stream_generate": [], "engine": []}

    def via_engine(i: int) -> tuple[float, float]:
        stamps: list[float] = []

        def emit(kind: bytes, rid: bytes, body: bytes) -> None:
            push.send_multipart((kind, rid, body), copy=False)
            stamps.append(time.perf_counter())

        t0 = time.perf_counter()
        engine.submit(b"r", Generate(ChatInput((Message("user", f"story number {i}"),)),
                                     Sampling(max_tokens=n, temperature=0.0)))
        while engine.active:
            poller.poll(0)
            engine.step(emit)
        while pull.poll(0):
            pull.recv_multipart()
        return stamps[0] - t0, (n - 1) / (stamps[-2] - stamps[0])

    def via_stream_generate(i: int) -> tuple[float, float]:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": f"story number {i}"}],
                                               add_generation_prompt=True, tokenize=False)
        t0 = time.perf_counter()
        stamps = [time.perf_counter() for _ in stream_generate(model, tokenizer, prompt, max_tokens=n,
                                                                sampler=make_sampler(temp=0.0))]
        return stamps[0] - t0, (n - 1) / (stamps[-1] - stamps[0])

    for i in range(2):
        via_engine(100 + i), via_stream_generate(100 + i)
    for i in range(6):
        for name, fn in (("engine", via_engine), ("stream_generate", via_stream_generate))[:: 1 if i % 2 else -1]:
            results[name].append(fn(i))
    for name, rows in results.items():
        print(f"{name:16s} ttft {1000 * statistics.median(r[0] for r in rows):7.1f} ms   "
              f"decode {statistics.median(r[1] for r in rows):8.1f} tok/s")


if __name__ == "__main__":
    main()
