"""OpenAI's Responses API's replies: the worker's stream as Responses' typed events, numbered by
`sequence_number`, and a whole reply as the response object.

The events: `response.created`, `response.in_progress`, then each output item in turn
(`response.output_item.added`, its content or arguments as deltas, `response.output_item.done`):
a `reasoning` item for the model's thinking, a `message` for its answer
(`response.output_text.delta`...), a `function_call` per tool call
(`response.function_call_arguments.delta` as the model writes them, `.done`); then
`response.completed` (or `response.incomplete` at the length limit, `response.failed` on an
error). The JSON around an answer's text delta is built once per item; per delta only the text
and the sequence number are encoded. Asked for (`include: ["message.output_text.logprobs"]`,
`top_logprobs`), the answer tokens' log probabilities go out with the text they made, on its
delta event and on the `output_text` part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from mlx_fleet.protocol import Done, Failure, Started, TokenLogprob, ToolCallDelta
from mlx_fleet.router.fleet.event_stream import BlockFramer
from mlx_fleet.router.fleet.exchange import Exchange
from mlx_fleet.router.fleet.reply import CallParts, GatheredReply
from mlx_fleet.router.http.encoding import line_json
from mlx_fleet.router.openai.reply_shapes import token_logprobs
from mlx_fleet.router.responses import types as rt

_ERROR_CODES = {429: "rate_limit_exceeded"}  # ResponseError.code is a closed list: all else is server_error
_KINDS = {"message": ("msg", "output_text", "response.output_text"),
          "reasoning": ("rs", "reasoning_text", "response.reasoning_text")}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


def _usage(done: Done) -> dict[str, Any]:
    u = done.usage
    return {"input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.prompt_tokens + u.completion_tokens}


def _item(kind: str, item_id: str, text: str, status: str,
          logprobs: list[TokenLogprob] | None = None) -> dict[str, Any]:
    """A message or reasoning output item holding `text` (a message's with its tokens' `logprobs`)."""
    if kind == "message":
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": token_logprobs(logprobs or [])}
        return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [part]}
    return {"id": item_id, "type": "reasoning", "summary": [], "status": status,
            "content": [{"type": "reasoning_text", "text": text}]}


def _call_item(item_id: str, call: CallParts, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name,
            "arguments": "".join(call.arguments)}


def _item_status(done: Done) -> str:
    return "incomplete" if done.finish_reason == "length" else "completed"


def output_of(reply: GatheredReply, done: Done) -> list[dict[str, Any]]:
    """A whole reply's output items, in the order a stream would have sent them."""
    status, items = _item_status(done), []
    if reply.reasoning:
        items.append(_item("reasoning", _new_id("rs"), "".join(reply.reasoning), status))
    if reply.text or not reply.tool_calls:
        items.append(_item("message", _new_id("msg"), reply.text, status, reply.answer_logprobs))
    return items + [_call_item(_new_id("fc"), call, "completed") for call in reply.tool_calls]


class ResponseShape:
    """The response object of one request, in each of its states; what does not change is built once."""

    def __init__(self, ex: Exchange, req: rt.ResponsesRequest, temperature: float, top_p: float) -> None:
        self._base = {
            "id": ex.id, "object": "response", "created_at": ex.created, "model": ex.model,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "temperature": temperature, "top_p": top_p,
            "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
            "tool_choice": req.tool_choice or "auto", "tools": req.tools or [],
            "text": req.text if req.text is not None and req.text.format is not None else {"format": {"type": "text"}},
            "truncation": req.truncation or "disabled", "store": False, "metadata": req.metadata or {},
            "background": False, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "user": req.user, "error": None, "incomplete_details": None, "usage": None,
        }

    def pending(self) -> dict[str, Any]:
        return {**self._base, "status": "in_progress", "output": []}

    def finished(self, output: list[dict[str, Any]], done: Done) -> dict[str, Any]:
        complete = done.finish_reason != "length"
        return {**self._base, "status": "completed" if complete else "incomplete",
                "incomplete_details": None if complete else {"reason": "max_output_tokens"},
                "output": output, "usage": _usage(done)}

    def failed(self, failure: Failure) -> dict[str, Any]:
        error = {"code": _ERROR_CODES.get(failure.status, "server_error"), "message": failure.message}
        return {**self._base, "status": "failed", "error": error, "output": []}


@dataclass(slots=True)
class _OpenItem:
    """The message or reasoning item being streamed: its text (and a message's log probabilities)
    so far, and its delta's JSON prefix."""

    kind: str
    id: str
    index: int
    prefix: bytes
    texts: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)


class ResponseEvents(BlockFramer):
    """Responses' typed events for one request, numbered in the order they are written."""

    thinking_kind, answer_kind = "reasoning", "message"

    def __init__(self, shape: ResponseShape) -> None:
        self.shape, self.seq = shape, 0
        self.output: list[dict[str, Any]] = []  # the items so far (a call's, from its start)
        self.open: _OpenItem | None = None
        self.calls: dict[int, tuple[str, int, CallParts]] = {}  # by call index: item id, output index, parts
        self.scored: list[TokenLogprob] = []  # answer tokens' log probabilities not sent yet

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = line_json({"type": kind, **fields, "sequence_number": self.seq})
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def opening(self, started: Started | None) -> bytes:
        pending = self.shape.pending()
        return self._event("response.created", response=pending) + self._event("response.in_progress", response=pending)

    def _start(self, kind: str) -> bytes:
        """Close the item being streamed, and open a `kind` item after it."""
        out = self._close("completed")
        prefix, part_type, event = _KINDS[kind]
        item = _OpenItem(kind, _new_id(prefix), len(self.output), b"")
        place = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        item.prefix = (b"event: " + event.encode() + b'.delta\ndata: {"type":"' + event.encode() + b'.delta",'
                       + line_json(place)[1:-1] + (b',"logprobs":[]' if kind == "message" else b"") + b',"delta":')
        self.open = item
        empty = {**_item(kind, item.id, "", "in_progress"), "content": []}
        part = {"type": part_type, "text": "", **({"annotations": [], "logprobs": []} if kind == "message" else {})}
        return (out + self._event("response.output_item.added", output_index=item.index, item=empty)
                + self._event("response.content_part.added", **place, part=part))

    def _close(self, status: str) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        text = "".join(item.texts)
        if item.kind == "message":
            item.logprobs += self.scored
            self.scored = []
        done = _item(item.kind, item.id, text, status, item.logprobs)
        place = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        extra = {"logprobs": done["content"][0]["logprobs"]} if item.kind == "message" else {}
        self.output.append(done)
        return (self._event(f"{_KINDS[item.kind][2]}.done", **place, text=text, **extra)
                + self._event("response.content_part.done", **place, part=done["content"][0])
                + self._event("response.output_item.done", output_index=item.index, item=done))

    def _delta(self, kind: str, text: str) -> bytes:
        out = self._start(kind) if self.open is None or self.open.kind != kind else b""
        self.open.texts.append(text)
        if self.scored and kind == self.answer_kind:
            scored, self.scored = self.scored, []
            self.open.logprobs += scored
            place = {"item_id": self.open.id, "output_index": self.open.index, "content_index": 0}
            return out + self._event("response.output_text.delta", **place, logprobs=token_logprobs(scored),
                                     delta=text)
        self.seq += 1
        return out + self.open.prefix + line_json(text) + b',"sequence_number":' + str(self.seq - 1).encode() + b"}\n\n"

    def _scored(self, logprobs: tuple[TokenLogprob, ...]) -> None:
        self.scored += logprobs

    def _call(self, piece: ToolCallDelta) -> bytes:
        """A piece of a call: its start opens its item, its arguments' text goes out as it comes,
        its end closes the item."""
        out = b""
        if piece.name:
            out += self._close("completed")
            index, call = len(self.output), CallParts(piece.id, piece.name, [])
            self.calls[piece.index] = (_new_id("fc"), index, call)
            self.output.append(_call_item(self.calls[piece.index][0], call, "in_progress"))
            out += self._event("response.output_item.added", output_index=index, item=self.output[index])
        item_id, index, call = self.calls[piece.index]
        place = {"item_id": item_id, "output_index": index}
        if piece.arguments:
            call.arguments.append(piece.arguments)
            out += self._event("response.function_call_arguments.delta", **place, delta=piece.arguments)
        if piece.done:
            self.output[index] = item = _call_item(item_id, call, "completed")
            out += (self._event("response.function_call_arguments.done", **place, arguments=item["arguments"])
                    + self._event("response.output_item.done", output_index=index, item=item))
        return out

    def finish(self, done: Done) -> bytes:
        out = self._close(_item_status(done))
        if not any(item["type"] != "reasoning" for item in self.output):
            # no answer and no call: still one (empty) message, as a whole reply has
            out += self._start("message") + self._close(_item_status(done))
        final = self.shape.finished(self.output, done)
        return out + self._event(f"response.{final['status']}", response=final)

    def error(self, failure: Failure) -> bytes:
        return self._event("response.failed", response=self.shape.failed(failure))
