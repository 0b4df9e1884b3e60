"""Anthropic's Messages API's replies: the worker's stream as Anthropic's events, and a whole
reply as Anthropic's message.

The events: `message_start` and `ping`, then one content block after another
(`content_block_start`, its deltas, `content_block_stop`): a `thinking` block for the model's
reasoning, a `text` block for its answer, a `tool_use` block per call (its input as
`input_json_delta`s, as the model writes it); then `message_delta` (stop reason, usage) and
`message_stop`. The JSON around an answer's text delta is built once per block, so framing one
costs one JSON string encode.
"""

from __future__ import annotations

import json
from typing import Any

from mlx_fleet.protocol import Done, Failure, Started, ToolCallDelta, Usage
from mlx_fleet.router.fleet.event_stream import BlockFramer
from mlx_fleet.router.fleet.exchange import Exchange
from mlx_fleet.router.fleet.reply import CallParts, GatheredReply
from mlx_fleet.router.http.encoding import line_json
from mlx_fleet.router.http.errors import ApiError

_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP_MESSAGE = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "cancelled": "end_turn", "tool_calls": "tool_use"}
_DELTAS = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking")}


def _stop(done: Done) -> tuple[str, str | None]:
    """Anthropic's `stop_reason` and `stop_sequence` for how a generation ended."""
    if done.stop_sequence is not None:
        return "stop_sequence", done.stop_sequence
    return _STOP_REASONS[done.finish_reason], None


def _usage(u: Usage) -> dict[str, int]:
    """Anthropic counts cache reads apart from `input_tokens` (its total is the sum of both)."""
    return {"input_tokens": u.prompt_tokens - u.cached_tokens, "output_tokens": u.completion_tokens,
            "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0}


def _block(kind: str, text: str) -> dict[str, str]:
    return {"type": "text", "text": text} if kind == "text" else {"type": "thinking", "thinking": text, "signature": ""}


def _tool_use(call: CallParts) -> dict[str, Any]:
    arguments = json.loads("".join(call.arguments) or "{}")
    return {"type": "tool_use", "id": call.id, "name": call.name,
            "input": arguments if isinstance(arguments, dict) else {"value": arguments}}


def whole_message(ex: Exchange, reply: GatheredReply) -> dict[str, Any]:
    content = [_block("thinking", "".join(reply.reasoning))] if reply.reasoning else []
    if reply.text or not reply.tool_calls:
        content.append(_block("text", reply.text))
    content += [_tool_use(call) for call in reply.tool_calls]
    reason, sequence = _stop(reply.done)
    return {"id": ex.id, "type": "message", "role": "assistant", "model": ex.model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence, "usage": _usage(reply.done.usage)}


class MessageEvents(BlockFramer):
    """Anthropic's stream for one request: content blocks opened as their first part arrives.

    `message_start` reports the prompt's tokens as the worker counted them when it accepted the
    request (Claude Code reads them there for its context accounting); `message_delta` repeats
    them with the output's."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.blocks: list[str] = []   # the type of each block opened so far
        self.open: str | None = None  # the type of the block being streamed, until its stop
        self._prefix = b""            # the JSON before a delta's text in that block

    def opening(self, started: Started | None) -> bytes:
        prompt = Usage(started.prompt_tokens, 0, started.cached_tokens) if started is not None else Usage(0, 0)
        message = {"id": self.ex.id, "type": "message", "role": "assistant", "model": self.ex.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": _usage(prompt)}
        return b'event: message_start\ndata: {"type":"message_start","message":' + line_json(message) + b"}\n\n" + _PING

    def _start(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._stop_block()
        index = len(self.blocks)
        self.blocks.append(kind)
        self.open = kind
        if kind in _DELTAS:
            delta_type, field = _DELTAS[kind]
            self._prefix = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                            + str(index).encode() + b',"delta":{"type":"' + delta_type.encode() + b'","'
                            + field.encode() + b'":')
        data = {"type": "content_block_start", "index": index, "content_block": block}
        return out + b"event: content_block_start\ndata: " + line_json(data) + b"\n\n"

    def _stop_block(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return (b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
                + str(len(self.blocks) - 1).encode() + b"}\n\n")

    def _delta(self, kind: str, text: str) -> bytes:
        out = self._start(kind, _block(kind, "")) if self.open != kind else b""
        return out + self._prefix + line_json(text) + b"}}\n\n"

    def _call(self, piece: ToolCallDelta) -> bytes:
        """A piece of a call: its start opens a `tool_use` block (input empty), its arguments' text
        goes out as `input_json_delta`s, its end closes the block."""
        out = b""
        if piece.name:
            out += self._start("tool_use", {"type": "tool_use", "id": piece.id, "name": piece.name, "input": {}})
        index = len(self.blocks) - 1
        if piece.arguments:
            out += (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":' + str(index).encode()
                    + b',"delta":{"type":"input_json_delta","partial_json":' + line_json(piece.arguments) + b"}}\n\n")
        if piece.done:
            out += self._stop_block()
        return out

    def finish(self, done: Done) -> bytes:
        out = self._stop_block()
        if "text" not in self.blocks and "tool_use" not in self.blocks:
            # no answer and no call: still one (empty) text block, as a whole reply has
            out += self._start("text", _block("text", "")) + self._stop_block()
        reason, sequence = _stop(done)
        delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                 "usage": _usage(done.usage)}
        return out + b"event: message_delta\ndata: " + line_json(delta) + b"\n\n" + _STOP_MESSAGE

    @staticmethod
    def error(failure: Failure) -> bytes:
        return b"event: error\ndata: " + line_json(ApiError.from_failure(failure).anthropic_envelope()) + b"\n\n"
