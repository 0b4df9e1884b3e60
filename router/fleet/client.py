"""The router's one connection to the supervisor: request streams in, admin calls out.

A DEALER socket to the supervisor (requests, cancels, admin calls, and the failures the
supervisor itself decides) and a PULL socket that workers push their stream frames to directly.
The readers hand each frame to the stream it belongs to without decoding it; a stream's
consumer takes everything that has arrived since it last looked, so a consumer that falls behind
gets several deltas at once and writes them as one SSE frame. The sink is drained whole on each
wake-up (one awaited poll per batch of frames, not one future per token).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os

import zmq
import zmq.asyncio

from mlx_fleet.protocol import (
    MAX_MESSAGE_BYTES,
    REQUEST_ID_BYTES,
    Call,
    Failure,
    Kind,
    Ping,
    Reply,
    decode_reply,
    encode,
    split_stream_frame,
)


class RequestStream:
    """Frames of one request, in arrival order; ends with exactly one END frame."""

    __slots__ = ("rid", "_frames", "_waiter", "ended")

    def __init__(self, rid: bytes) -> None:
        self.rid = rid
        self._frames: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False

    def push(self, kind: bytes, body: bytes) -> None:
        self._frames.append((kind, body))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self) -> list[tuple[bytes, bytes]]:
        """Wait for at least one frame, then return all that are queued."""
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        frames = list(self._frames)
        self._frames.clear()
        if frames[-1][0] == Kind.END:
            self.ended = True
        return frames


class SupervisorUnavailable(Exception):
    pass


class FleetClient:
    """`endpoint`: the supervisor (requests, cancels, calls); `sink`: where workers push streams."""

    def __init__(self, endpoint: str, sink: str, call_timeout: float = 15.0) -> None:
        self.endpoint = endpoint
        self.call_timeout = call_timeout
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sink = self.ctx.socket(zmq.PULL)
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.sink.setsockopt(zmq.RCVHWM, 0)
        self.sink_endpoint = sink
        self.streams: dict[bytes, RequestStream] = {}
        self.calls: dict[bytes, asyncio.Future[Reply]] = {}
        self._prefix = os.urandom(4)
        self._ids = itertools.count(1)
        self._readers: list[asyncio.Task] = []
        self.down: Failure | None = None
        self._ping: asyncio.Future[Reply] | None = None

    def start(self) -> None:
        self.sink.bind(self.sink_endpoint)
        self.sock.connect(self.endpoint)
        self._readers = [asyncio.create_task(self._read_supervisor(), name="fleet-client-supervisor"),
                         asyncio.create_task(self._read_sink(), name="fleet-client-sink")]

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self.sock.close(0)
        self.sink.close(0)
        self.ctx.term()

    def _next_id(self) -> bytes:
        return self._prefix + next(self._ids).to_bytes(REQUEST_ID_BYTES - len(self._prefix), "big")

    async def _read_supervisor(self) -> None:
        recv, calls = self.sock.recv_multipart, self.calls
        while True:
            kind, rid, body = await recv()
            if kind == Kind.REPLY:
                future = calls.pop(rid, None)
                if future is not None and not future.done():
                    future.set_result(decode_reply(body))
            else:
                self._deliver(kind, rid, body)

    async def _read_sink(self) -> None:
        wait = self.sink.poll
        recv = zmq.Socket.shadow(self.sink.underlying).recv  # a plain socket: no future per frame
        deliver = self._deliver
        while True:
            await wait(flags=zmq.POLLIN)
            while True:
                try:
                    frame = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                deliver(*split_stream_frame(frame))

    def _deliver(self, kind: bytes, rid: bytes, body: bytes) -> None:
        """Hand a frame to its stream. A frame for a stream that already ended (a worker's late
        token after the supervisor failed the request, say) is dropped."""
        stream = self.streams.get(rid)
        if stream is not None:
            stream.push(kind, body)
            if kind == Kind.END:
                del self.streams[rid]

    def open(self, model: str, body: bytes, kind: bytes = Kind.GENERATE) -> RequestStream:
        """Send a generation (or embedding) request; its frames arrive on the returned stream."""
        if self.down is not None:
            raise SupervisorUnavailable(self.down.message)
        rid = self._next_id()
        stream = RequestStream(rid)
        self.streams[rid] = stream
        self.sock.send_multipart((kind, rid, model.encode(), body))
        return stream

    def cancel(self, stream: RequestStream) -> None:
        if not stream.ended and self.streams.pop(stream.rid, None) is not None:
            self.sock.send_multipart((Kind.CANCEL, stream.rid))

    async def ping(self, timeout: float) -> Failure | None:
        """Raise SupervisorUnavailable unless the supervisor answers; its answer is None when it
        is ready, else why not. Concurrent callers share one round trip (a monitor polling
        /health from many connections costs the supervisor one answer per round trip, not one per
        request); each still waits for an answer that arrives after it asked."""
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self.call(Ping(), timeout))
        return (await asyncio.shield(self._ping)).failure

    async def call(self, call: Call, timeout: float | None = None) -> Reply:
        if self.down is not None:
            raise SupervisorUnavailable(self.down.message)
        rid = self._next_id()
        future = asyncio.get_running_loop().create_future()
        self.calls[rid] = future
        await self.sock.send_multipart((Kind.CALL, rid, encode(call)))
        try:
            return await asyncio.wait_for(future, timeout or self.call_timeout)
        except TimeoutError:
            raise SupervisorUnavailable("the supervisor did not answer in time") from None
        finally:
            self.calls.pop(rid, None)

    def fail_all(self, failure: Failure) -> None:
        """The supervisor is gone: every open request ends now with this error, and new ones fail."""
        self.down = failure
        body = encode(failure)
        for stream in list(self.streams.values()):
            stream.push(Kind.END, body)
        self.streams.clear()
        for future in self.calls.values():
            if not future.done():
                future.set_exception(SupervisorUnavailable(failure.message))
        self.calls.clear()
