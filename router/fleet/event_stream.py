"""The loop every API shares to answer a generation: a request's frames from the fleet, streamed
through the API's `Framer` as server-sent events or gathered into one `GatheredReply`.

A streamed response waits for the first frame before it sends any header, so a request that
fails before producing anything (model cannot load, worker crashed) gets a plain JSON error with
the right status instead of a 200 stream. After that, each batch of frames that arrived together
is one write, and the framer does the API's part: chat and text completions (`openai.frames`),
Responses (`responses.events`) and Anthropic Messages (`anthropic.events`), each with the JSON
around a text delta built once per request or block, so only the text is encoded per frame.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from litestar import Response

from mlx_fleet.protocol import (
    Delta,
    Done,
    Failure,
    Generate,
    Kind,
    Started,
    TokenLogprob,
    ToolCallDelta,
    decode_delta,
    decode_end,
    decode_started,
    encode,
)
from mlx_fleet.router.fleet.client import RequestStream
from mlx_fleet.router.fleet.exchange import Exchange
from mlx_fleet.router.fleet.reply import GatheredReply, is_answer, is_plain
from mlx_fleet.router.http.encoding import as_json, event_stream
from mlx_fleet.router.http.errors import ApiError


class Framer(Protocol):
    """How one API frames a streamed answer. `_sse` calls it, in this order: `opening` once, with
    the first batch (so the client's first byte marks the model's first token), given the prompt's
    size when the worker reported it (`Started`; a fake worker may not); for each batch
    of deltas, `text` when they carry only answer text (the fast path: per-token work belongs
    there alone) or `parts` when they carry thinking, tool calls or log probabilities; then
    `finish` (everything after the last delta, end of stream included) or `error`. Each returns
    the bytes to write."""

    def opening(self, started: Started | None) -> bytes: ...
    def text(self, text: str) -> bytes: ...
    def parts(self, deltas: list[Delta]) -> bytes: ...
    def finish(self, done: Done) -> bytes: ...
    def error(self, failure: Failure) -> bytes: ...


class BlockFramer:
    """What the Responses and Anthropic framers share: a reply streamed as a sequence of blocks
    (their output items, content blocks) in the order the model produced them: thinking, answer
    text, each tool call (its start, its arguments' text as the model writes it, its end). A
    subclass names its two text kinds and says how a delta of either kind, and a piece of a
    call, is framed."""

    thinking_kind = "thinking"
    answer_kind = "text"

    def _delta(self, kind: str, text: str) -> bytes:
        raise NotImplementedError

    def _call(self, piece: ToolCallDelta) -> bytes:
        raise NotImplementedError

    def _scored(self, logprobs: tuple[TokenLogprob, ...]) -> None:
        """Answer tokens' log probabilities, to go out with the answer's next text (an API
        without them leaves them)."""

    def text(self, text: str) -> bytes:
        # a token with no text (yet), or tool-call markup: nothing to say
        return self._delta(self.answer_kind, text) if text else b""

    def parts(self, deltas: list[Delta]) -> bytes:
        out = b""
        for d in deltas:
            if d.reasoning:
                out += self._delta(self.thinking_kind, d.reasoning)
            if d.logprobs and is_answer(d):
                self._scored(d.logprobs)
            out += self.text(d.text)
            for piece in d.tool_calls:
                out += self._call(piece)
        return out


async def respond(ex: Exchange, request: Generate, framer: Framer | None,
                  whole: Callable[[GatheredReply], bytes]) -> Response:
    """Run `request`: streamed through `framer`, or (without one) answered whole by `whole(reply)`."""
    rs = ex.open(Kind.GENERATE, encode(request))
    if framer is None:
        return as_json(whole(await ex.collect(rs)))

    if ex.usage is not None:
        ex.usage.stream = True
    try:
        first = await rs.take()
        while first[-1][0] == Kind.START:  # accepted: the headers wait for its first token
            first += await rs.take()
        ex.first_token()
        kind, body = first[1] if first[0][0] == Kind.START else first[0]
        if kind == Kind.END:
            end = decode_end(body)
            if isinstance(end, Failure):
                raise ApiError.from_failure(end)
    except BaseException:
        ex.close()
        raise
    return event_stream(_sse(ex, rs, first, framer))


async def _sse(ex: Exchange, rs: RequestStream, first: list[tuple[bytes, bytes]],
               framer: Framer) -> AsyncIterator[bytes]:
    try:
        started = None
        if first[0][0] == Kind.START:
            started, first = decode_started(first[0][1]), first[1:]
        opening = framer.opening(started)  # goes out with the first token: one write
        batch = first
        while True:
            deltas: list[Delta] = []
            end = None
            for kind, body in batch:
                if kind == Kind.DELTA:
                    deltas.append(decode_delta(body))
                else:
                    end = decode_end(body)
            if not deltas:
                out = b""
            elif all(is_plain(d) for d in deltas):
                out = framer.text("".join(d.text for d in deltas))
            else:
                out = framer.parts(deltas)
            if opening:
                out, opening = opening + out, b""
            if end is None:
                if out:
                    yield out
                batch = await rs.take()
                continue
            if isinstance(end, Failure):
                yield out + framer.error(end)
            else:
                ex.finished(end)
                yield out + framer.finish(end)
            return
    finally:
        ex.close()  # a client that went away stops its generation within one step
