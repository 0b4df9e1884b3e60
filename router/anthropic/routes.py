"""Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

A translator on the chat route's internals: the request becomes the same `Generate` a chat
completion sends (`anthropic.input`; the worker cannot tell which API a request came from), and
the worker's stream becomes Anthropic's events (`anthropic.events`). Errors on these routes are in
Anthropic's shape (`http.errors.ANTHROPIC_ERROR_HANDLERS`). `/v1/messages/count_tokens` asks the
worker, which tokenizes with the model's own tokenizer and chat template exactly as a generation
would.
"""

from __future__ import annotations

import msgspec
from litestar import Request, Response, post
from litestar.params import JSONBody

from mlx_fleet.protocol import Kind, TokenCount, encode
from mlx_fleet.router.anthropic import types as an
from mlx_fleet.router.anthropic.events import MessageEvents, whole_message
from mlx_fleet.router.anthropic.input import count_tokens_generate, messages_generate
from mlx_fleet.router.fleet.event_stream import respond
from mlx_fleet.router.http.encoding import as_json, line_json
from mlx_fleet.router.http.errors import ANTHROPIC_ERROR_HANDLERS, AnthropicEnvelope
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.http.usage import usage_record
from mlx_fleet.router.router_state import FromApp, RouterState

_ERRORS = error_responses(404, 413, 429, envelope=AnthropicEnvelope)


@post("/v1/messages", status_code=200, exception_handlers=ANTHROPIC_ERROR_HANDLERS, opt={"scope": "messages"},
      dto=body_dto(an.MessagesRequest), return_dto=None, responses=_ERRORS)
async def messages(request: Request, router: FromApp[RouterState],
                   data: JSONBody[an.MessagesRequest]) -> Response[an.AnthropicMessage]:
    req = data
    model, name = await router.catalog.resolve(router.fleet, req.model)
    generate = await messages_generate(req, model, router)
    ex = router.exchange(name, "msg_", usage_record(request, model.id))
    return await respond(ex, generate, MessageEvents(ex) if req.stream else None,
                         lambda reply: line_json(whole_message(ex, reply)))


class TokenCountReply(msgspec.Struct):
    input_tokens: int


@post("/v1/messages/count_tokens", status_code=200, exception_handlers=ANTHROPIC_ERROR_HANDLERS,
      opt={"scope": "messages"}, dto=body_dto(an.CountTokensRequest), return_dto=None, responses=_ERRORS)
async def count_tokens(router: FromApp[RouterState],
                       data: JSONBody[an.CountTokensRequest]) -> Response[TokenCountReply]:
    req = data
    model, name = await router.catalog.resolve(router.fleet, req.model)
    generate = await count_tokens_generate(req, model, router)
    end = await router.exchange(name, "count-").one_answer(Kind.COUNT, encode(generate))
    assert isinstance(end, TokenCount)
    return as_json(TokenCountReply(input_tokens=end.input_tokens))


ROUTES = [messages, count_tokens]
