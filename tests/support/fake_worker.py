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


class Link:
    """The worker's two sockets: DEALER to the supervisor, PUSH to the router's sink."""

    def __init__(self, args: argparse.Namespace) -> None:
        ctx = zmq.Context()
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, args.identity.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(args.endpoint)
        self.sink = ctx.socket(zmq.PUSH)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.connect(args.sink)

    def stream(self, kind: bytes, rid: bytes, body: bytes) -> None:
        """As the real worker: frames to the router's sink, and a copy of each END to the supervisor."""
        if kind == Kind.END:
            self.sock.send_multipart((kind, rid, body))
        self.sink.send(stream_frame(kind, rid, body))

    def control(self, message: object) -> None:
        self.sock.send_multipart((Kind.CONTROL, b"", encode(message)))


def main() -> int:
    args = parse(sys.argv[1:])

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.spawn_grandchild:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    link = Link(args)
    if args.spare:
        args = wait_for_assign(args, link)
        if args is None:
            return 0
    if not load(args, link):
        return 1
    return serve(args, link)


def wait_for_assign(args: argparse.Namespace, link: Link) -> argparse.Namespace | None:
    """As the real spare: say Spare, wait for Assign, then become that model's worker (its switches
    parsed anew, the model's own added). None: told to shut down, or orphaned, before an Assign."""
    time.sleep(args.import_seconds)
    link.control(Spare(os.getpid(), Memory(rss=20 * 2**20)))
    while True:
        if link.sock.poll(50):
            frames = link.sock.recv_multipart()
            message = decode_control(frames[2]) if frames[0] == Kind.CONTROL else None
            if isinstance(message, Shutdown):
                return None
            if isinstance(message, Assign):
                base = [a for a in sys.argv[1:] if a != "--spare"]
                return parse([*base, *json.loads(args.model_flags).get(message.model_id, [])])
        elif os.getppid() != args.parent_pid:
            return None


def load(args: argparse.Namespace, link: Link) -> bool:
    """Say Loading, take the load's time (or hang), then say Ready, or LoadFailed (False)."""
    link.control(Loading(os.getpid()))
    if args.hang_on_load:
        time.sleep(3600)
    time.sleep(args.load_seconds)
    if args.fail_load:
        link.control(LoadFailed(args.fail_load, out_of_memory=args.oom))
        link.sock.close(linger=1000)  # as the real worker does: the last message must get out
        return False
    link.control(Ready(os.getpid(), Memory(rss=args.memory, mlx_active=args.memory), 4096, args.load_seconds))
    return True


def serve(args: argparse.Namespace, link: Link) -> int:
    """Take requests and cancels, and send every active request a token per step until its limit."""
    memory = args.memory
    active: dict[bytes, int] = {}  # request id -> tokens sent
    limits: dict[bytes, int] = {}
    sent_total = 0
    last_report = time.monotonic()
    while True:
        if os.getppid() != args.parent_pid:
            return 0
        if link.sock.poll(0 if active else 50):
            frames = link.sock.recv_multipart()
            kind, rid = frames[0], frames[1]
            if kind == Kind.GENERATE:
                request = decode_generate(frames[2])
                active[rid] = 0
                limits[rid] = min(args.tokens, request.sampling.max_tokens)
            elif kind == Kind.CANCEL and rid in active:
                n = active.pop(rid)
                link.stream(Kind.END, rid, encode(Done("cancelled", Usage(1, n))))
            elif kind == Kind.CONTROL and isinstance(decode_control(frames[2]), Shutdown):
                if not args.ignore_sigterm:
                    return 0
            continue
        time.sleep(args.token_interval)
        if time.monotonic() - last_report > 0.5:  # the busy worker's heartbeat, as the real one sends
            last_report = time.monotonic()
            link.control(MemoryReport(Memory(rss=memory, mlx_active=memory)))
        for rid in list(active):
            active[rid] += 1
            sent_total += 1
            if sent_total == args.crash_after:
                os._exit(3)
            link.stream(Kind.DELTA, rid, encode(Delta("tok ")))
            if active[rid] >= limits[rid]:
                del active[rid]
                link.stream(Kind.END, rid, encode(Done("length", Usage(1, limits[rid]))))
                memory += args.grow_per_request
                link.control(MemoryReport(Memory(rss=memory, mlx_active=memory)))


if __name__ == "__main__":
    sys.exit(main())
