"""OpenAI's Responses API: `POST /v1/responses`, stateless (nothing is stored; `store` is accepted).

A translator on the chat route's internals: `instructions` and `input` become the same
`Generate` a chat completion sends, and the worker's stream becomes Responses' typed events,
numbered by `sequence_number`: `response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`...,
`response.output_text.done`, `response.content_part.done`, `response.output_item.done`, then
`response.completed` (or `response.incomplete` at the length limit, `response.failed` on an
error). The JSON around a text delta is built once per request; per delta only the text and the
sequence number are encoded.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State

from mlx_fleet.config import FleetConfig, ModelConfig
from mlx_fleet.protocol import ChatInput, Done, Failure, Generate, Sampling
from router import responses_types as rt
from router.completions import (
    Exchange,
    decode_request,
    default_temperature,
    line_json,
    resolve_model,
    respond,
)
from router.conversation import Turn, chat_messages
from router.errors import ApiError, validation_error

_ROLES = {"developer": "system"}
_ERROR_CODES = {429: "rate_limit_exceeded"}  # ResponseError.code is a closed list: all else is server_error


def _refuse_what_cannot_be_honoured(req: rt.ResponsesRequest) -> None:
    if req.previous_response_id is not None or req.conversation is not None:
        param = "previous_response_id" if req.previous_response_id is not None else "conversation"
        raise ApiError(400, "This server keeps no responses or conversations: send the whole conversation in "
                            "'input' (and 'store': false).", param=param, code="unsupported_parameter")
    if req.prompt is not None:
        raise ApiError(400, "Stored prompt templates are not supported.", param="prompt", code="unsupported_parameter")
    if req.background:
        raise ApiError(400, "Background responses are not supported.", param="background",
                       code="unsupported_parameter")
    if req.tools:
        raise ApiError(400, "Tools are not supported by this server yet.", param="tools", code="unsupported_parameter")
    if req.top_logprobs:
        raise ApiError(400, "logprobs are not supported.", param="top_logprobs", code="unsupported_parameter")
    fmt = (req.text or {}).get("format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise ApiError(400, "Only the 'text' format is supported.", param="text.format", code="unsupported_value")


def _message_item(i: int, raw: Any) -> rt.MessageItem | None:
    """One `input` item as a message, or None for an item that is not part of the prompt."""
    kind = raw.get("type", "message") if isinstance(raw, dict) else None
    if kind == "reasoning":
        return None  # an earlier turn's reasoning, sent back by clients; templates leave it out
    if kind != "message":
        what = f"Input items of type '{kind}' are not supported." if isinstance(kind, str) else \
            "An input item must be an object."
        raise ApiError(400, what, param=f"input[{i}]", code="unsupported_value")
    try:
        return msgspec.convert(raw, rt.MessageItem)
    except msgspec.ValidationError as e:
        raise validation_error(msgspec.ValidationError(str(e).replace("`$", f"`$.input[{i}]", 1))) from None


def _turn(i: int, item: rt.MessageItem) -> Turn:
    turn = Turn(_ROLES.get(item.role, item.role))
    if isinstance(item.content, str):
        turn.text = item.content
        return turn
    texts = []
    for j, part in enumerate(item.content):
        if isinstance(part, rt.InputImage):
            if part.image_url is None:
                raise ApiError(400, "Images must be given by 'image_url' (uploaded files are not supported).",
                               param=f"input[{i}].content[{j}]", code="unsupported_value")
            turn.images.append((part.image_url, f"input[{i}].content[{j}].image_url"))
        else:
            texts.append(part.refusal if isinstance(part, rt.Refusal) else part.text)
    turn.text = "\n".join(texts)
    return turn


async def _conversation(req: rt.ResponsesRequest, model: ModelConfig, state: State) -> ChatInput:
    turns = [Turn("system", req.instructions)] if req.instructions else []
    if isinstance(req.input, str):
        turns.append(Turn("user", req.input))
    else:
        items = [(i, item) for i, raw in enumerate(req.input) if (item := _message_item(i, raw)) is not None]
        turns += [_turn(i, item) for i, item in items]
    if not turns:
        raise ApiError(400, "'input' is empty.", param="input", code="empty_array")
    return await chat_messages(turns, model, state.images, state.config.server.max_images_per_request, "input",
                               "responses")


def _sampling(req: rt.ResponsesRequest, config: FleetConfig, model: ModelConfig) -> Sampling:
    return Sampling(
        max_tokens=req.max_output_tokens or config.server.default_max_tokens,
        temperature=default_temperature(config, model) if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        max_tokens_is_default=req.max_output_tokens is None,
    )


def _usage(done: Done) -> dict[str, Any]:
    u = done.usage
    return {"input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.prompt_tokens + u.completion_tokens}


class ResponseShape:
    """The response object of one request, in each of its states; what does not change is built once."""

    def __init__(self, ex: Exchange, req: rt.ResponsesRequest, sampling: Sampling) -> None:
        self.item_id = f"msg_{os.urandom(12).hex()}"
        self._base = {
            "id": ex.id, "object": "response", "created_at": ex.created, "model": ex.model,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "temperature": sampling.temperature, "top_p": sampling.top_p,
            "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
            "tool_choice": req.tool_choice if isinstance(req.tool_choice, str) else "auto", "tools": [],
            "text": {"format": {"type": "text"}}, "truncation": req.truncation or "disabled",
            "store": False, "metadata": req.metadata or {}, "background": False, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "user": req.user,
            "error": None, "incomplete_details": None, "usage": None,
        }

    def message(self, text: str, status: str) -> dict[str, Any]:
        return {"id": self.item_id, "type": "message", "role": "assistant", "status": status,
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}

    def pending(self) -> dict[str, Any]:
        return {**self._base, "status": "in_progress", "output": []}

    def finished(self, text: str, done: Done) -> dict[str, Any]:
        complete = done.finish_reason != "length"
        return {**self._base, "status": "completed" if complete else "incomplete",
                "incomplete_details": None if complete else {"reason": "max_output_tokens"},
                "output": [self.message(text, "completed" if complete else "incomplete")], "usage": _usage(done)}

    def failed(self, failure: Failure) -> dict[str, Any]:
        error = {"code": _ERROR_CODES.get(failure.status, "server_error"), "message": failure.message}
        return {**self._base, "status": "failed", "error": error, "output": []}


class ResponseEvents:
    """Responses' typed events for one request, numbered in the order they are written."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape, self.seq, self.parts = shape, 0, []
        place = {"item_id": shape.item_id, "output_index": 0, "content_index": 0}
        self._delta_prefix = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
                              + line_json(place)[1:-1] + b',"logprobs":[],"delta":')
        self._place = place

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = line_json({"type": kind, **fields, "sequence_number": self.seq})
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def opening(self) -> bytes:
        shape, empty = self.shape, {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item = {**shape.message("", "in_progress"), "content": []}
        return (self._event("response.created", response=shape.pending())
                + self._event("response.in_progress", response=shape.pending())
                + self._event("response.output_item.added", output_index=0, item=item)
                + self._event("response.content_part.added", **self._place, part=empty))

    def text(self, text: str) -> bytes:
        self.parts.append(text)
        self.seq += 1
        return self._delta_prefix + line_json(text) + b',"sequence_number":' + str(self.seq - 1).encode() + b"}\n\n"

    def finish(self, done: Done) -> bytes:
        text = "".join(self.parts)
        final = self.shape.finished(text, done)
        item = final["output"][0]
        return (self._event("response.output_text.done", **self._place, text=text, logprobs=[])
                + self._event("response.content_part.done", **self._place, part=item["content"][0])
                + self._event("response.output_item.done", output_index=0, item=item)
                + self._event(f"response.{final['status']}", response=final))

    def error(self, failure: Failure) -> bytes:
        return self._event("response.failed", response=self.shape.failed(failure))


@post("/v1/responses", status_code=200)
async def responses(request: Request, state: State) -> Response:
    config: FleetConfig = state.config
    req = decode_request(await request.body(), rt.ResponsesRequest)
    model = resolve_model(config, req.model)
    _refuse_what_cannot_be_honoured(req)
    sampling = _sampling(req, config, model)
    generate = Generate(await _conversation(req, model, state), sampling)
    ex = Exchange.new(state.fleet, state.admission, req.model, "resp")
    shape = ResponseShape(ex, req, sampling)
    return await respond(ex, generate, ResponseEvents(shape) if req.stream else None,
                         lambda text, done: line_json(shape.finished(text, done)))
