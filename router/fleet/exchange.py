"""A request's way through the fleet (`Exchange`): admitted, sent, its frames taken, its usage
recorded, and its admission slot given back, whichever API it came from."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from mlx_fleet.protocol import Done, End, Failure, Kind, decode_delta, decode_end
from mlx_fleet.router.fleet.calls import unavailable
from mlx_fleet.router.fleet.client import FleetClient, RequestStream, SupervisorUnavailable
from mlx_fleet.router.fleet.reply import GatheredReply
from mlx_fleet.router.http.admission import Admission
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.usage import UsageRecord


@dataclass(slots=True)
class Exchange:
    """One request on its way through the fleet; holds its admission slot until `close()`."""

    client: FleetClient
    admission: Admission
    model: str
    created: int
    id: str
    usage: UsageRecord | None = None
    stream: RequestStream | None = None
    admitted: bool = False

    @classmethod
    def new(cls, client: FleetClient, admission: Admission, model: str, prefix: str,
            usage: UsageRecord | None = None) -> Exchange:
        return cls(client, admission, model, int(time.time()), prefix + os.urandom(12).hex(), usage)

    def first_token(self) -> None:
        if self.usage is not None:
            self.usage.mark_first_token()

    def finished(self, done: Done) -> None:
        if self.usage is not None:
            self.usage.tokens(done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.cached_tokens)

    def open(self, kind: bytes, body: bytes) -> RequestStream:
        self.admission.enter(self.model)
        self.admitted = True
        try:
            self.stream = self.client.open(self.model, body, kind)
        except SupervisorUnavailable as e:
            self.close()
            raise unavailable(e) from None
        return self.stream

    def close(self) -> None:
        """Idempotent: cancels the request if it still runs, and gives its admission slot back."""
        if self.stream is not None:
            self.client.cancel(self.stream)
        if self.admitted:
            self.admitted = False
            self.admission.leave(self.model)

    async def one_answer(self, kind: bytes, body: bytes) -> End:
        """The END of a request that streams nothing (embeddings, token counts)."""
        stream = self.open(kind, body)
        try:
            frames = await stream.take()
        finally:
            self.close()
        end = decode_end(frames[-1][1])
        if isinstance(end, Failure):
            raise ApiError.from_failure(end)
        return end

    async def collect(self, stream: RequestStream) -> GatheredReply:
        """Everything the request produced, for a non-streamed response."""
        reply = GatheredReply()
        first = True
        try:
            while True:
                for kind, body in await stream.take():
                    if kind == Kind.DELTA:
                        if first:
                            first = False
                            self.first_token()
                        reply.add(decode_delta(body))
                    elif kind == Kind.END:
                        end = decode_end(body)
                        if isinstance(end, Failure):
                            raise ApiError.from_failure(end)
                        self.finished(end)
                        reply.done = end
                        return reply
        finally:
            self.close()
