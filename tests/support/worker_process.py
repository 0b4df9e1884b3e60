"""A real `python -m mlx_fleet.worker` process for tests that talk to it as the supervisor and the router
would: its control socket, and its sink, where each frame it pushes arrives as it was sent (one
Delta a message, never merged as the router's stream loop merges what arrived together).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from mlx_fleet.protocol import (
    REQUEST_ID_BYTES,
    Delta,
    Done,
    Failure,
    Generate,
    Kind,
    Ready,
    Shutdown,
    decode_control,
    decode_delta,
    decode_end,
    encode,
    split_stream_frame,
)

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def worker(path: Path, kind: str) -> Iterator[tuple[zmq.Socket, zmq.Socket, Ready]]:
    """A `python -m mlx_fleet.worker` on a real model, ready, with its control socket and its sink."""
    ctx = zmq.Context()
    runtime = Path(tempfile.mkdtemp())
    control, sink = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PULL)
    control.bind(f"ipc://{runtime}/control")
    sink.bind(f"ipc://{runtime}/sink")
    proc = subprocess.Popen([sys.executable, "-m", "mlx_fleet.worker", "--model-id", "m", "--path", str(path), "--type", kind,
                             "--endpoint", f"ipc://{runtime}/control", "--sink", f"ipc://{runtime}/sink",
                             "--identity", "w", "--parent-pid", str(os.getpid()), "--state-dir", str(runtime)],
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        while True:
            assert control.poll(120_000), "the worker did not report"
            _, frame_kind, _, body = control.recv_multipart()
            message = decode_control(body) if frame_kind == Kind.CONTROL else None
            if isinstance(message, Ready):
                break
        yield control, sink, message
        control.send_multipart((b"w", Kind.CONTROL, b"", encode(Shutdown())))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.destroy(linger=0)


def end_of(control: zmq.Socket, rid: bytes) -> object:
    while True:
        assert control.poll(30_000), "no END from the worker"
        frames = control.recv_multipart()
        if frames[1] == Kind.END and frames[2] == rid:
            return decode_end(frames[3])


def generate(control: zmq.Socket, sink: zmq.Socket, request: Generate) -> tuple[list[Delta], Done | Failure]:
    """Run `request` on the worker: each Delta as the worker sent it, and how the request ended."""
    rid = os.urandom(REQUEST_ID_BYTES)
    control.send_multipart((b"w", Kind.GENERATE, rid, encode(request)))
    deltas: list[Delta] = []
    while True:
        assert sink.poll(60_000), "the worker sent nothing"
        kind, got, body = split_stream_frame(sink.recv())
        if got != rid:
            continue
        if kind == Kind.DELTA:
            deltas.append(decode_delta(body))
        elif kind == Kind.END:
            return deltas, decode_end(body)
