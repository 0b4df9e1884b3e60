"""Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

A translator on the chat route's internals: the request becomes the same `Generate` a chat
completion sends (the worker cannot tell which API a request came from), and the worker's
stream becomes Anthropic's events (`message_start`, `content_block_start`, `ping`,
`content_block_delta`..., `content_block_stop`, `message_delta`, `message_stop`). A text delta
is the same bytes around the text for every request, so framing one costs one JSON string
encode. Errors on these routes are in Anthropic's shape (`router.errors.ANTHROPIC_ERROR_HANDLERS`);
`/v1/messages/count_tokens` asks the worker, which tokenizes with the model's own tokenizer and
chat template exactly as a generation would.
"""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.datastructures import State

from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import ChatInput, Done, Failure, Generate, Kind, Sampling, TokenCount, encode
from router import anthropic_types as an
from router.completions import (
    Exchange,
    decode_request,
    default_temperature,
    line_json,
    resolve_model,
    respond,
)
from router.conversation import Turn, chat_messages
from router.errors import ANTHROPIC_ERROR_HANDLERS, ApiError

_START_BLOCK = (b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                b'"content_block":{"type":"text","text":""}}\n\nevent: ping\ndata: {"type":"ping"}\n\n')
_TEXT_PREFIX = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,' \
               b'"delta":{"type":"text_delta","text":'
_TEXT_SUFFIX = b"}}\n\n"
_STOP_BLOCK = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
_STOP_MESSAGE = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "cancelled": "end_turn"}


def _image_url(source: an.Base64Source | an.URLSource) -> str:
    if isinstance(source, an.URLSource):
        return source.url
    return f"data:{source.media_type};base64,{source.data}"


def _turn(i: int, message: an.MessageParam) -> Turn:
    if isinstance(message.content, str):
        return Turn(message.role, message.content)
    turn, texts = Turn(message.role), []
    for j, block in enumerate(message.content):
        where = f"messages[{i}].content[{j}]"
        if isinstance(block, an.TextBlock):
            texts.append(block.text)
        elif isinstance(block, an.ImageBlock):
            turn.images.append((_image_url(block.source), f"{where}.source"))
        elif isinstance(block, (an.ToolUseBlock, an.ToolResultBlock)):
            raise ApiError(400, f"{where}: {block.__struct_config__.tag} blocks need tool use, which this server "
                                "does not support yet.", param=where, code="unsupported_parameter")
        # thinking blocks: an earlier turn's reasoning, which chat templates leave out of the prompt
    turn.text = "\n".join(texts)
    return turn


async def _conversation(req: an.CountTokensRequest, model: ModelConfig, state: State) -> ChatInput:
    if req.tools:
        raise ApiError(400, "Tool use is not supported by this server yet.", param="tools",
                       code="unsupported_parameter")
    if (req.output_config or {}).get("format") is not None:
        raise ApiError(400, "Structured output formats are not supported by this server yet.",
                       param="output_config.format", code="unsupported_parameter")
    if req.messages[-1].role == "assistant":
        raise ApiError(400, "A final assistant message (a prefilled reply) is not supported: the last message "
                            "must be the user's.", param="messages", code="unsupported_value")
    turns = []
    if req.system:
        system = req.system if isinstance(req.system, str) else "\n".join(b.text for b in req.system)
        turns.append(Turn("system", system))
    turns += [_turn(i, m) for i, m in enumerate(req.messages)]
    return await chat_messages(turns, model, state.images, state.config.server.max_images_per_request, "messages",
                               "messages")


def _sampling(req: an.MessagesRequest, temperature: float) -> Sampling:
    return Sampling(
        max_tokens=req.max_tokens,
        temperature=temperature if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        stop=tuple(req.stop_sequences or ()),
        # A ceiling, shortened to what fits in the context: Claude Code asks for 32k tokens or
        # more whatever the model, and a local model's context is often smaller than that.
        max_tokens_is_default=True,
    )


def _stop(done: Done) -> tuple[str, str | None]:
    """Anthropic's `stop_reason` and `stop_sequence` for how a generation ended."""
    if done.stop_sequence is not None:
        return "stop_sequence", done.stop_sequence
    return _STOP_REASONS[done.finish_reason], None


def _usage(done: Done) -> dict[str, int]:
    """Anthropic counts cache reads apart from `input_tokens` (its total is the sum of both)."""
    u = done.usage
    return {"input_tokens": u.prompt_tokens - u.cached_tokens, "output_tokens": u.completion_tokens,
            "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0}


def _message(ex: Exchange, text: str, done: Done) -> dict[str, object]:
    reason, sequence = _stop(done)
    return {"id": ex.id, "type": "message", "role": "assistant", "model": ex.model,
            "content": [{"type": "text", "text": text}], "stop_reason": reason, "stop_sequence": sequence,
            "usage": _usage(done)}


class MessageEvents:
    """Anthropic's stream: one text content block; the JSON around a delta is the same for every request.

    `message_start` cannot know the prompt's length yet (it goes out with the first token), so its
    `input_tokens` is 0 and the real counts come in `message_delta`, which the SDK's accumulator
    reads."""

    def __init__(self, ex: Exchange) -> None:
        message = {"id": ex.id, "type": "message", "role": "assistant", "model": ex.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        self._opening = (b'event: message_start\ndata: {"type":"message_start","message":' + line_json(message)
                         + b"}\n\n" + _START_BLOCK)

    def opening(self) -> bytes:
        return self._opening

    def text(self, text: str) -> bytes:
        return _TEXT_PREFIX + line_json(text) + _TEXT_SUFFIX

    def finish(self, done: Done) -> bytes:
        reason, sequence = _stop(done)
        delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                 "usage": _usage(done)}
        return _STOP_BLOCK + b"event: message_delta\ndata: " + line_json(delta) + b"\n\n" + _STOP_MESSAGE

    @staticmethod
    def error(failure: Failure) -> bytes:
        return b"event: error\ndata: " + line_json(ApiError.from_failure(failure).anthropic_envelope()) + b"\n\n"


@post("/v1/messages", status_code=200, exception_handlers=ANTHROPIC_ERROR_HANDLERS)
async def messages(request: Request, state: State) -> Response:
    req = decode_request(await request.body(), an.MessagesRequest)
    model = resolve_model(state.config, req.model)
    generate = Generate(await _conversation(req, model, state), _sampling(req, default_temperature(state.config, model)))
    ex = Exchange.new(state.fleet, state.admission, req.model, "msg")
    return await respond(ex, generate, MessageEvents(ex) if req.stream else None,
                         lambda text, done: line_json(_message(ex, text, done)))


@post("/v1/messages/count_tokens", status_code=200, exception_handlers=ANTHROPIC_ERROR_HANDLERS)
async def count_tokens(request: Request, state: State) -> Response:
    req = decode_request(await request.body(), an.CountTokensRequest)
    model = resolve_model(state.config, req.model)
    generate = Generate(await _conversation(req, model, state), Sampling(max_tokens=1))
    end = await Exchange.new(state.fleet, state.admission, req.model, "count").one_answer(Kind.COUNT, encode(generate))
    assert isinstance(end, TokenCount)
    return Response(line_json({"input_tokens": end.input_tokens}), media_type="application/json")


ROUTES = [messages, count_tokens]
