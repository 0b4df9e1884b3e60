"""A fake worker: a real subprocess speaking the real protocol, without MLX.

The supervisor cannot tell it from `python -m mlx_fleet.worker`, so its own logic (routing, memory policy,
draining, crash handling) is tested with real processes and real ZeroMQ in milliseconds. Switches
make it misbehave on command; everything it does is deterministic.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import zmq

from mlx_fleet.protocol import (
    Assign,
    Delta,
    Done,
    Kind,
    LoadFailed,
    Loading,
    Memory,
    MemoryReport,
    Ready,
    Shutdown,
    Spare,
    Usage,
    decode_control,
    decode_generate,
    encode,
    stream_frame,
)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--identity", required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--sink", required=True)
    p.add_argument("--parent-pid", type=int, required=True)
    p.add_argument("--memory", type=int, default=100 * 2**20, help="bytes to report as MLX memory")
    p.add_argument("--grow-per-request", type=int, default=0, help="reported memory grows by this per request")
    p.add_argument("--load-seconds", type=float, default=0.0)
    p.add_argument("--fail-load", default="")
    p.add_argument("--hang-on-load", action="store_true")
    p.add_argument("--tokens", type=int, default=4, help="tokens per request")
    p.add_argument("--token-interval", type=float, default=0.0)
    p.add_argument("--crash-after", type=int, default=-1, help="exit(3) after this many tokens")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--spawn-grandchild", action="store_true")
    p.add_argument("--oom", action="store_true", help="--fail-load says it ran out of memory")
    p.add_argument("--spare", action="store_true", help="start as a warm spare: say Spare, wait for Assign")
    p.add_argument("--import-seconds", type=float, default=0.0, help="a spare's imports take this long")
    p.add_argument("--model-flags", default="{}", help="a spare's JSON map: model id -> that model's switches")
    return p.parse_args(argv)


def main() -> int:
    args = parse(sys.argv[1:])

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.spawn_grandchild:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, args.identity.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    sink = ctx.socket(zmq.PUSH)
    sink.setsockopt(zmq.LINGER, 0)
    sink.connect(args.sink)

    def stream(kind: bytes, rid: bytes, body: bytes) -> None:
        """As the real worker: frames to the router's sink, and a copy of each END to the supervisor."""
        if kind == Kind.END:
            sock.send_multipart((kind, rid, body))
        sink.send(stream_frame(kind, rid, body))

    def control(message) -> None:
        sock.send_multipart((Kind.CONTROL, b"", encode(message)))

    if args.spare:
        time.sleep(args.import_seconds)
        control(Spare(os.getpid(), Memory(rss=20 * 2**20)))
        while True:  # as the real spare: wait for Assign, then become that model's worker
            if sock.poll(50):
                frames = sock.recv_multipart()
                message = decode_control(frames[2]) if frames[0] == Kind.CONTROL else None
                if isinstance(message, Shutdown):
                    return 0
                if isinstance(message, Assign):
                    base = [a for a in sys.argv[1:] if a != "--spare"]
                    args = parse([*base, *json.loads(args.model_flags).get(message.model_id, [])])
                    break
            elif os.getppid() != args.parent_pid:
                return 0
    control(Loading(os.getpid()))
    if args.hang_on_load:
        time.sleep(3600)
    time.sleep(args.load_seconds)
    if args.fail_load:
        control(LoadFailed(args.fail_load, out_of_memory=args.oom))
        sock.close(linger=1000)  # as the real worker does: the last message must get out
        return 1
    memory = args.memory
    control(Ready(os.getpid(), Memory(rss=memory, mlx_active=memory), 4096, args.load_seconds))

    active: dict[bytes, int] = {}  # request id -> tokens sent
    limits: dict[bytes, int] = {}
    sent_total = 0
    last_report = time.monotonic()
    while True:
        if os.getppid() != args.parent_pid:
            return 0
        if sock.poll(0 if active else 50):
            frames = sock.recv_multipart()
            kind, rid = frames[0], frames[1]
            if kind == Kind.GENERATE:
                request = decode_generate(frames[2])
                active[rid] = 0
                limits[rid] = min(args.tokens, request.sampling.max_tokens)
            elif kind == Kind.CANCEL and rid in active:
                n = active.pop(rid)
                stream(Kind.END, rid, encode(Done("cancelled", Usage(1, n))))
            elif kind == Kind.CONTROL and isinstance(decode_control(frames[2]), Shutdown):
                if not args.ignore_sigterm:
                    return 0
            continue
        time.sleep(args.token_interval)
        if time.monotonic() - last_report > 0.5:  # the busy worker's heartbeat, as the real one sends
            last_report = time.monotonic()
            control(MemoryReport(Memory(rss=memory, mlx_active=memory)))
        for rid in list(active):
            active[rid] += 1
            sent_total += 1
            if sent_total == args.crash_after:
                os._exit(3)
            stream(Kind.DELTA, rid, encode(Delta("tok ")))
            if active[rid] >= limits[rid]:
                del active[rid]
                stream(Kind.END, rid, encode(Done("length", Usage(1, limits[rid]))))
                memory += args.grow_per_request
                control(MemoryReport(Memory(rss=memory, mlx_active=memory)))


if __name__ == "__main__":
    sys.exit(main())
