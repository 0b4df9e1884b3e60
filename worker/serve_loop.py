"""The worker's life once started: say LOADING, load, say READY, then serve until told to stop.

Order matters for start-up speed and for the supervisor's view of it: connect and say LOADING
first (milliseconds), then import MLX's libraries and load (seconds), then say READY with what
the model costs in memory. The loop after that never blocks for long: it polls the socket, runs
one batch step, and checks that its supervisor is still alive.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from collections.abc import Callable

import zmq

from mlx_fleet.heap import freeze_startup_heap
from mlx_fleet.protocol import (
    MAX_MESSAGE_BYTES,
    Assign,
    Spare,
    Kind,
    LoadFailed,
    Loading,
    MemoryReport,
    Ready,
    Shutdown,
    Started,
    Failure,
    decode_control,
    decode_embed,
    decode_generate,
    encode,
    stream_frame,
)
from mlx_fleet.worker.engines.base import Engine, Unsupported

PARENT_CHECK_SECONDS = 0.5
IDLE_POLL_MS = 100
MEMORY_REPORT_SECONDS = 5.0
PROGRESS_SECONDS = 0.5
FINAL_SEND_MS = 1000


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, args.identity.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.sock.connect(args.endpoint)
        self.sink = self.ctx.socket(zmq.PUSH)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.setsockopt(zmq.SNDHWM, 0)  # never block the decode loop on a slow router
        self.sink.connect(args.sink)
        self.engine: Engine | None = None
        self.running = True

    def emit(self, kind: bytes, rid: bytes, body: bytes) -> None:
        """A stream frame goes straight to the router; an END also to the supervisor, which
        counts it (and so knows the request is over) without ever seeing the tokens. The
        supervisor's copy goes first, so its books are current by the time the client has its answer."""
        if kind == Kind.END:
            self.sock.send_multipart((kind, rid, body))
        self.sink.send(stream_frame(kind, rid, body))

    def control(self, message) -> None:
        self.sock.send_multipart((Kind.CONTROL, b"", encode(message)))

    def parent_alive(self) -> bool:
        return os.getppid() == self.args.parent_pid

    def wait_for_model(self) -> bool:
        """As a warm spare: import what a text model needs now, then wait for `Assign`."""
        import mlx_fleet.worker.engines.text  # noqa: F401 - the import is the point: mlx-lm, transformers
        from mlx_fleet.worker.own_memory import measure

        self.control(Spare(os.getpid(), measure()))
        while self.running:
            if not self.sock.poll(IDLE_POLL_MS):
                if not self.parent_alive():
                    return False
                continue
            frames = self.sock.recv_multipart()
            if frames[0] != Kind.CONTROL:
                continue
            message = decode_control(frames[2])
            if isinstance(message, Shutdown):
                return False
            if isinstance(message, Assign):
                self.args.model_id, self.args.path, self.args.type = message.model_id, message.path, message.model_type
                self.args.prompt_cache_bytes = message.prompt_cache_bytes
                self.args.prompt_cache_disk = message.prompt_cache_disk
                self.args.prompt_cache_dir = Path(message.prompt_cache_dir) if message.prompt_cache_dir else None
                return True
        return False

    def load(self) -> bool:
        self.control(Loading(os.getpid()))
        started = time.perf_counter()
        try:
            from mlx_fleet.worker.engines.load_engine import ModelNotLoadable, load_engine
            from mlx_fleet.worker.own_memory import measure

            self.engine = load_engine(self.args.type, self.args.path, self.args.state_dir.expanduser(),
                                      prompt_cache_bytes=self.args.prompt_cache_bytes,
                                      prompt_cache_dir=self.args.prompt_cache_dir,
                                      prompt_cache_disk=self.args.prompt_cache_disk)
        except ModelNotLoadable as e:
            self.control(LoadFailed(str(e), traceback=_logged_traceback(e)))
            return False
        except MemoryError as e:
            self.control(LoadFailed(f"out of memory: {e}", out_of_memory=True, traceback=_logged_traceback(e)))
            return False
        except Exception as e:  # noqa: BLE001 - report any load failure instead of dying silently
            oom = "malloc" in str(e) or "memory" in str(e).lower()
            self.control(LoadFailed(f"{type(e).__name__}: {e}", out_of_memory=oom, traceback=_logged_traceback(e)))
            return False
        self.measure = measure
        freeze_startup_heap()
        self.control(Ready(os.getpid(), measure(), self.engine.context_length, time.perf_counter() - started))
        return True

    def handle(self, frames: list[bytes]) -> None:
        kind, rid, body = frames[0], frames[1], frames[2] if len(frames) > 2 else b""
        engine = self.engine
        if kind == Kind.GENERATE:
            try:
                accepted = engine.submit(rid, decode_generate(body))
            except Unsupported as e:
                accepted = self._unsupported(e)
            self.emit(Kind.START if isinstance(accepted, Started) else Kind.END, rid, encode(accepted))
        elif kind == Kind.COUNT:
            self._one_answer(rid, "Counting", lambda: engine.count(decode_generate(body)))
        elif kind == Kind.EMBED:
            self._one_answer(rid, "Embedding", lambda: engine.embed(decode_embed(body)))
            self.control(MemoryReport(self.measure()))
        elif kind == Kind.CANCEL:
            engine.cancel(rid, self.emit)
        elif kind == Kind.CONTROL and isinstance(decode_control(body), Shutdown):
            self.running = False

    def _one_answer(self, rid: bytes, doing: str, answer: Callable[[], object]) -> None:
        """A request answered at once (COUNT, EMBED): its answer or its failure ends it, and one
        bad input never ends the worker."""
        try:
            reply = answer()
        except Unsupported as e:
            reply = self._unsupported(e)
        except Exception as e:  # noqa: BLE001 - one bad input must not end the worker
            reply = Failure("internal_error", f"{doing} failed: {type(e).__name__}: {e}", 500)
        self.emit(Kind.END, rid, encode(reply))

    def _unsupported(self, error: Unsupported) -> Failure:
        """The router checks a model's type first; this answers a request that got past it anyway."""
        return Failure("model_not_supported", f"Model '{self.args.model_id}' does not support {error}.", 400, "model")

    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        engine = self.engine
        next_check = next_report = time.monotonic()
        while self.running:
            timeout = 0 if engine.active else IDLE_POLL_MS
            if poller.poll(timeout):
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(frames)
            if engine.active:
                engine.step(self.emit)
                if not engine.active:  # the last request just ended: KV caches may have grown
                    self.control(MemoryReport(self.measure()))
            now = time.monotonic()
            if now >= next_check:
                next_check = now + PARENT_CHECK_SECONDS
                if not self.parent_alive():
                    break  # the supervisor is gone: nobody is left to read what we make
                if now >= next_report:
                    # While busy this doubles as the watchdog's heartbeat: the supervisor does not
                    # see tokens, so it learns "still making progress" from these.
                    next_report = now + (PROGRESS_SECONDS if engine.active else MEMORY_REPORT_SECONDS)
                    self.control(MemoryReport(self.measure()))
        engine.cancel_all(self.emit)

    def close(self) -> None:
        # Long enough for a last message (LoadFailed, final END frames) to leave, bounded so a dead
        # supervisor never keeps this process alive.
        self.sink.close(linger=FINAL_SEND_MS)
        self.sock.close(linger=FINAL_SEND_MS)
        self.ctx.term()


def _logged_traceback(error: BaseException) -> str:
    """Where a load failed: the original error's traceback (the loader re-raises the library's
    error as ModelNotLoadable), printed into the model's log and returned for the supervisor."""
    text = "".join(traceback.format_exception(error.__cause__ or error.__context__ or error))
    print(text, file=sys.stderr, flush=True)
    return text
