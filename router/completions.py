"""Chat and text completions: request → wire message → (stream of) OpenAI responses.

A streamed response waits for the first frame before it sends any header, so a request that
fails before producing anything (model cannot load, worker crashed) gets a plain JSON error with
the right status instead of a 200 stream. After that, every frame is encoded once: the JSON
around the text is precomputed per request and only the text itself is encoded per frame.

The loop that reads a request's stream is the same for every API (chat and text completions
here, Responses and Anthropic Messages in their own modules): each API only says how its events
are framed, through a `Framer`.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec
from litestar import Response
from litestar.response import Stream

from mlx_fleet.config import FleetConfig, ModelConfig
from mlx_fleet.protocol import (
    Delta,
    Done,
    End,
    Failure,
    Generate,
    Kind,
    Sampling,
    Started,
    TextInput,
    TokenLogprob,
    TokensInput,
    ToolCallDelta,
    decode_delta,
    decode_end,
    decode_started,
    encode,
)
from router import openai_types as oa
from router.admission import Admission
from router.errors import ApiError, validation_error
from router.fleet_client import FleetClient, RequestStream, SupervisorUnavailable
from router.reply import (
    Reply,
    chat_logprobs,
    chat_message,
    completion_logprobs,
    is_answer,
    is_plain,
    stream_tool_calls,
)

_json = msgspec.json.encode
_DECODERS: dict[type, Callable[[bytes], object]] = {}
_DONE = b"data: [DONE]\n\n"
RequestT = TypeVar("RequestT")
# JSON leaves these unescaped, but clients that split a stream into lines the way Python's
# str.splitlines does (httpx's aiter_lines, which many OpenAI-SDK users' own loops use) break a
# line at each: a token holding one would cut its event in two.
_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def line_json(value: object) -> bytes:
    """JSON that stays on one line for every line splitter."""
    out = _json(value)
    if b"\xc2\x85" in out or b"\xe2\x80" in out:
        for raw, escaped in _LINE_BREAKS:
            out = out.replace(raw, escaped)
    return out


def decode_request(body: bytes, kind: type[RequestT]) -> RequestT:
    """A request body as `kind` (a msgspec struct), or a 400 worded like OpenAI's."""
    decoder = _DECODERS.get(kind) or _DECODERS.setdefault(kind, msgspec.json.Decoder(kind).decode)
    if not body.strip():
        raise ApiError(400, "We could not parse the JSON body of your request. The body is empty.")
    try:
        return decoder(body)
    except msgspec.ValidationError as e:
        raise validation_error(e) from None
    except msgspec.DecodeError:
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means "
                                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                                "payload, but what was sent was not valid JSON.)") from None
        raise ApiError(400, "Request body must be a JSON object.") from None


def default_temperature(config: FleetConfig, model: ModelConfig) -> float:
    return config.server.default_temperature if model.temperature is None else model.temperature


def sampling_from(req: oa._Sampling, max_tokens: int | None, default_max_tokens: int,
                  default_temperature: float) -> Sampling:
    if req.n != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n", code="unsupported_value")
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                       param="stream_options")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    return Sampling(
        max_tokens=max_tokens or default_max_tokens,
        temperature=default_temperature if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        seed=req.seed,
        stop=stop,
        repetition_penalty=req.repetition_penalty,
        frequency_penalty=req.frequency_penalty or None,
        presence_penalty=req.presence_penalty or None,
        max_tokens_is_default=max_tokens is None,
    )


def completion_input(req: oa.CompletionRequest) -> TextInput | TokensInput:
    if req.echo or req.suffix:
        raise ApiError(400, "echo and suffix are not supported.", code="unsupported_parameter")
    prompt = req.prompt
    if isinstance(prompt, str):
        return TextInput(prompt)
    if all(isinstance(p, int) for p in prompt):
        return TokensInput(tuple(prompt))
    if len(prompt) == 1:
        return TextInput(prompt[0])
    raise ApiError(400, "'prompt' must be a string, a list of one string, or a list of token ids.",
                   param="prompt", code="invalid_value")


@dataclass(slots=True)
class Exchange:
    """One request on its way through the fleet; holds its admission slot until `close()`."""

    client: FleetClient
    admission: Admission
    model: str
    created: int
    id: str
    stream: RequestStream | None = None
    admitted: bool = False

    @classmethod
    def new(cls, client: FleetClient, admission: Admission, model: str, prefix: str) -> Exchange:
        return cls(client, admission, model, int(time.time()), f"{prefix}-{os.urandom(12).hex()}")

    def open(self, kind: bytes, body: bytes) -> RequestStream:
        self.admission.enter(self.model)
        self.admitted = True
        try:
            self.stream = self.client.open(self.model, body, kind)
        except SupervisorUnavailable as e:
            self.close()
            raise ApiError(503, f"The model server is not available: {e}", code="supervisor_unavailable") from None
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

    async def collect(self, stream: RequestStream) -> Reply:
        """Everything the request produced, for a non-streamed response."""
        reply = Reply()
        try:
            while True:
                for kind, body in await stream.take():
                    if kind == Kind.DELTA:
                        reply.add(decode_delta(body))
                    elif kind == Kind.END:
                        end = decode_end(body)
                        if isinstance(end, Failure):
                            raise ApiError.from_failure(end)
                        reply.done = end
                        return reply
        finally:
            self.close()


def _usage(done: Done) -> oa.Usage:
    u = done.usage
    return oa.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                    total_tokens=u.prompt_tokens + u.completion_tokens,
                    prompt_tokens_details=oa.PromptTokensDetails(cached_tokens=u.cached_tokens))


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


class CompletionFrames:
    """Chat and text completion chunks: precomputed JSON around the per-frame text."""

    def __init__(self, ex: Exchange, chat: bool, include_usage: bool = False, top_logprobs: bool = False) -> None:
        self.offset = 0          # text sent so far, for text completions' logprobs offsets
        self.top_logprobs = top_logprobs
        head = {"id": ex.id, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": ex.created, "model": ex.model}
        self.chat, self.include_usage = chat, include_usage
        self._head = line_json(head)[:-1]  # without the closing brace
        if chat:
            self._text_prefix = b"data: " + self._head + b',"choices":[{"index":0,"delta":{"content":'
            self._text_suffix = b'},"finish_reason":null,"logprobs":null}]}\n\n'
        else:
            self._text_prefix = b"data: " + self._head + b',"choices":[{"index":0,"text":'
            self._text_suffix = b',"finish_reason":null,"logprobs":null}]}\n\n'

    def text(self, text: str) -> bytes:
        self.offset += len(text)
        return self._text_prefix + line_json(text) + self._text_suffix

    def parts(self, deltas: list[Delta]) -> bytes:
        """A chunk with thinking, tool calls or log probabilities besides the text."""
        text = "".join(d.text for d in deltas)
        scored = [t for d in deltas for t in d.logprobs]
        if not self.chat:
            logprobs = completion_logprobs(scored, self.offset, self.top_logprobs) if scored else None
            self.offset += len(text)
            choice = {"index": 0, "text": text, "finish_reason": None, "logprobs": logprobs}
        else:
            delta: dict = {}
            reasoning = "".join(d.reasoning for d in deltas)
            calls = stream_tool_calls([c for d in deltas for c in d.tool_calls])
            if not (text or reasoning or calls or scored):
                return b""  # only the end of a call, which OpenAI's stream does not mark
            if text or not (reasoning or calls):
                delta["content"] = text
            if reasoning:
                delta["reasoning_content"] = reasoning
            if calls:
                delta["tool_calls"] = calls
            choice = {"index": 0, "delta": delta, "finish_reason": None,
                      "logprobs": chat_logprobs(scored) if scored else None}
        return b"data: " + self._head + b',"choices":[' + line_json(choice) + b"]}\n\n"

    def opening(self, started: Started | None) -> bytes:
        if not self.chat:
            return b""
        return b"data: " + self._head + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},' \
                                        b'"finish_reason":null,"logprobs":null}]}\n\n'

    def finish(self, done: Done) -> bytes:
        body = b'"delta":{}' if self.chat else b'"text":""'
        out = (b"data: " + self._head + b',"choices":[{"index":0,' + body + b',"finish_reason":'
               + line_json(done.finish_reason) + b',"logprobs":null}]}\n\n')
        if self.include_usage:
            out += b"data: " + self._head + b',"choices":[],"usage":' + line_json(_usage(done)) + b"}\n\n"
        return out + _DONE

    @staticmethod
    def error(failure: Failure) -> bytes:
        return b"data: " + line_json(ApiError.from_failure(failure).envelope()) + b"\n\n"


def completion_body(ex: Exchange, request: Generate, chat: bool) -> Callable[[Reply], bytes]:
    """The non-streamed answer of a chat or text completion."""
    wants_logprobs = request.logprobs is not None

    def body(reply: Reply) -> bytes:
        done = reply.done
        if chat:
            return _json(oa.ChatCompletion(id=ex.id, created=ex.created, model=ex.model, usage=_usage(done), choices=[
                oa.ChatChoice(message=chat_message(reply), finish_reason=done.finish_reason,
                              logprobs=chat_logprobs(reply.logprobs) if wants_logprobs else None)]))
        logprobs = completion_logprobs(reply.logprobs, 0, bool(request.logprobs)) if wants_logprobs else None
        return _json(oa.Completion(id=ex.id, created=ex.created, model=ex.model, usage=_usage(done), choices=[
            oa.CompletionChoice(text=reply.text, finish_reason=done.finish_reason, logprobs=logprobs)]))
    return body


async def respond(ex: Exchange, request: Generate, framer: Framer | None,
                  whole: Callable[[Reply], bytes]) -> Response:
    """Run `request`: streamed through `framer`, or (without one) answered whole by `whole(reply)`."""
    rs = ex.open(Kind.GENERATE, encode(request))
    if framer is None:
        return Response(whole(await ex.collect(rs)), media_type="application/json")

    try:
        first = await rs.take()
        while first[-1][0] == Kind.START:  # accepted: the headers wait for its first token
            first += await rs.take()
        kind, body = first[1] if first[0][0] == Kind.START else first[0]
        if kind == Kind.END:
            end = decode_end(body)
            if isinstance(end, Failure):
                raise ApiError.from_failure(end)
    except BaseException:
        ex.close()
        raise
    return Stream(_sse(ex, rs, first, framer), media_type="text/event-stream",
                  headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


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
                yield out + framer.finish(end)
            return
    finally:
        ex.close()  # a client that went away stops its generation within one step
