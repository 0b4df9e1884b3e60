"""Chat and text completions: a request → its wire message, a request's way through the fleet
(`Exchange`), and OpenAI's completion chunks and bodies.

A streamed completion goes through the loop every API shares (`router.event_stream`); its
`CompletionFrames` precompute the JSON around a chunk's text once per request, so only the text
itself is encoded per frame.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

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
    TokensInput,
    decode_delta,
    decode_end,
)
from mlx_fleet.router import openai_types as oa
from mlx_fleet.router.admission import Admission
from mlx_fleet.router.errors import ApiError, validation_error
from mlx_fleet.router.event_stream import line_json
from mlx_fleet.router.fleet_client import FleetClient, RequestStream, SupervisorUnavailable
from mlx_fleet.router.reply import Reply, chat_logprobs, chat_message, completion_logprobs, stream_tool_calls
from mlx_fleet.router.usage import UsageRecord

_json = msgspec.json.encode
_DECODERS: dict[type, Callable[[bytes], object]] = {}
_DONE = b"data: [DONE]\n\n"
RequestT = TypeVar("RequestT")
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


def _usage(done: Done) -> oa.Usage:
    u = done.usage
    return oa.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                    total_tokens=u.prompt_tokens + u.completion_tokens,
                    prompt_tokens_details=oa.PromptTokensDetails(cached_tokens=u.cached_tokens))


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
