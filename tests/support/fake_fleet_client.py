"""A stand-in for the router's `FleetClient` (same interface, no ZeroMQ, no supervisor, no worker),
so the router's HTTP layer can be tested in-process in milliseconds.

It speaks the real protocol: a request's body is decoded with the protocol's own decoders (what a
worker would read), its answer is a script of protocol structs (`Started`, `Delta`, `Done`,
`Failure`, `Embeddings`, `TokenCount`) encoded as the worker would send them and handed to the
router's real `RequestStream`; an admin call is answered with a `Reply` that went through the
wire's codec, so the router converts its result exactly as it does the supervisor's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from mlx_fleet.catalog.entry import ModelEntry, RegistryListing
from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import (
    Call,
    Delta,
    Done,
    Embed,
    Embeddings,
    End,
    Failure,
    Generate,
    GetCatalog,
    Kind,
    Ping,
    Reply,
    Started,
    TokenCount,
    Usage,
    decode_embed,
    decode_generate,
    decode_reply,
    encode,
)
from mlx_fleet.router.fleet.client import RequestStream, SupervisorUnavailable

Frame = Started | Delta | End
CONTEXT_LENGTH = 4096  # what the fake catalog says of every model's files
Script = Callable[[str, Generate | Embed], Iterable[Frame]]
_KINDS: dict[type, bytes] = {Started: Kind.START, Delta: Kind.DELTA}


def say(*texts: str, prompt_tokens: int = 3, finish_reason: str = "stop", cached_tokens: int = 0) -> list[Frame]:
    """A generation that answers `texts`, one delta each (`cached_tokens` of its prompt from the cache)."""
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(texts), cached_tokens=cached_tokens)
    return [Started(prompt_tokens, cached_tokens), *(Delta(t) for t in texts),
            Done(finish_reason, usage)]  # type: ignore[arg-type]


def answer(model: str, request: Generate | Embed) -> list[Frame]:
    """The default script: "Hello, world" for a generation, a 2-wide vector per text to embed."""
    if isinstance(request, Embed):
        rows = len(request.texts) or len(request.tokens)
        return [Embeddings(dim=2, vectors=b"\x00\x00\x80?\x00\x00\x00@" * rows, token_counts=(2,) * rows)]
    return say("Hello", ", world")


class FakeFleetClient:
    """`FleetClient`'s interface. `script(model, request)` gives each request's frames (a count
    request gets a `TokenCount` unless the script ends it otherwise); `answers` maps a call type to
    its result (or a `Failure`); what the router sent is kept in `requests` and `calls`."""

    def __init__(self, models: Iterable[ModelConfig], script: Script = answer) -> None:
        listing = RegistryListing(models=[ModelEntry(id=m.id, path=m.path, source="config", type=m.type,
                                                     aliases=list(m.aliases), context_length=CONTEXT_LENGTH)
                                          for m in models],
                                  scan_paths=[], hf_cache=False, last_scan=None, active_profile=None)
        self.script = script
        self.answers: dict[type, Any] = {Ping: None, GetCatalog: listing}
        self.requests: list[tuple[str, bytes, Generate | Embed]] = []
        self.calls: list[Call] = []
        self.streams: dict[bytes, RequestStream] = {}
        self.cancelled: list[bytes] = []
        self.down: Failure | None = None
        self._ids = 0
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self.down = None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def open(self, model: str, body: bytes, kind: bytes = Kind.GENERATE) -> RequestStream:
        if self.down is not None:
            raise SupervisorUnavailable(self.down.message)
        self._ids += 1
        stream = RequestStream(self._ids.to_bytes(12, "big"))
        self.streams[stream.rid] = stream
        request = decode_embed(body) if kind == Kind.EMBED else decode_generate(body)
        self.requests.append((model, kind, request))
        frames = list(self.script(model, request))
        if kind == Kind.COUNT and not isinstance(frames[-1], Failure):
            frames = [TokenCount(input_tokens=7)]
        task = asyncio.get_running_loop().create_task(self._send(stream, frames))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return stream

    async def _send(self, stream: RequestStream, frames: list[Frame]) -> None:
        """Each frame as the worker pushes it, one event-loop turn apart (so a stream has batches)."""
        for frame in frames:
            if stream.rid not in self.streams:
                return  # cancelled
            kind = _KINDS.get(type(frame), Kind.END)
            stream.push(kind, encode(frame))
            if kind == Kind.END:
                del self.streams[stream.rid]
            await asyncio.sleep(0)

    def cancel(self, stream: RequestStream) -> None:
        if not stream.ended and self.streams.pop(stream.rid, None) is not None:
            self.cancelled.append(stream.rid)

    async def ping(self, timeout: float) -> Failure | None:
        return (await self.call(Ping(), timeout)).failure

    async def call(self, call: Call, timeout: float | None = None) -> Reply:
        if self.down is not None:
            raise SupervisorUnavailable(self.down.message)
        self.calls.append(call)
        if type(call) not in self.answers:
            raise SupervisorUnavailable(f"the fake fleet has no answer for {type(call).__name__}")
        result = self.answers[type(call)]
        reply = Reply(failure=result) if isinstance(result, Failure) else Reply(result=result)
        return decode_reply(encode(reply))  # as the wire carries it: a result arrives as plain data

    def fail_all(self, failure: Failure) -> None:
        self.down = failure
        for stream in list(self.streams.values()):
            stream.push(Kind.END, encode(failure))
        self.streams.clear()
