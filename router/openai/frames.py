"""Chat and text completions as OpenAI frames them: streamed chunks and whole bodies.

A streamed completion goes through the loop every API shares (`fleet.event_stream`); its
`CompletionFrames` precompute the JSON around a chunk's text once per request, so only the text
itself is encoded per frame.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from mlx_fleet.protocol import Delta, Done, Failure, Generate, Started
from mlx_fleet.router.fleet.exchange import Exchange
from mlx_fleet.router.fleet.reply import GatheredReply
from mlx_fleet.router.http.encoding import line_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.openai import types as oa
from mlx_fleet.router.openai.reply_shapes import chat_logprobs, chat_message, completion_logprobs, stream_tool_calls

_json = msgspec.json.encode
_DONE = b"data: [DONE]\n\n"


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


def completion_body(ex: Exchange, request: Generate, chat: bool) -> Callable[[GatheredReply], bytes]:
    """The non-streamed answer of a chat or text completion."""
    wants_logprobs = request.logprobs is not None

    def body(reply: GatheredReply) -> bytes:
        done = reply.done
        if chat:
            return _json(oa.ChatCompletion(id=ex.id, created=ex.created, model=ex.model, usage=_usage(done), choices=[
                oa.ChatChoice(message=chat_message(reply), finish_reason=done.finish_reason,
                              logprobs=chat_logprobs(reply.logprobs) if wants_logprobs else None)]))
        logprobs = completion_logprobs(reply.logprobs, 0, bool(request.logprobs)) if wants_logprobs else None
        return _json(oa.Completion(id=ex.id, created=ex.created, model=ex.model, usage=_usage(done), choices=[
            oa.CompletionChoice(text=reply.text, finish_reason=done.finish_reason, logprobs=logprobs)]))
    return body
