"""OpenAI's chat and text completions (`POST /v1/chat/completions`, `POST /v1/completions`) and
the model list (`GET /v1/models`)."""

from __future__ import annotations

from litestar import Request, Response, get, post
from litestar.params import JSONBody

from mlx_fleet.router.fleet.event_stream import respond
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.http.usage import usage_record
from mlx_fleet.router.openai import types as oa
from mlx_fleet.router.openai.chat_input import chat_generate
from mlx_fleet.router.openai.completion_input import completion_generate
from mlx_fleet.router.openai.frames import CompletionFrames, completion_body
from mlx_fleet.router.router_state import FromApp, RouterState


@post("/v1/chat/completions", status_code=200, opt={"scope": "chat"}, dto=body_dto(oa.ChatCompletionRequest),
      return_dto=None, responses=error_responses(404, 413, 429))
async def chat_completions(request: Request, router: FromApp[RouterState],
                           data: JSONBody[oa.ChatCompletionRequest]) -> Response[oa.ChatCompletion]:
    return await _complete(request, router, data)


@post("/v1/completions", status_code=200, opt={"scope": "completions"}, dto=body_dto(oa.CompletionRequest),
      return_dto=None, responses=error_responses(404, 413, 429))
async def completions(request: Request, router: FromApp[RouterState],
                      data: JSONBody[oa.CompletionRequest]) -> Response[oa.Completion]:
    return await _complete(request, router, data)


async def _complete(request: Request, router: RouterState,
                    req: oa.ChatCompletionRequest | oa.CompletionRequest) -> Response:
    """Chat and text completions answer alike: OpenAI's chunks streamed, or one body."""
    chat = isinstance(req, oa.ChatCompletionRequest)
    model, name = await router.catalog.resolve(router.fleet, req.model)
    generate = await (chat_generate(req, model, router) if chat else completion_generate(req, model, router))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    ex = router.exchange(name, "chatcmpl-" if chat else "cmpl-", usage_record(request, model.id))
    framer = CompletionFrames(ex, chat, include_usage, bool(generate.logprobs)) if req.stream else None
    return await respond(ex, generate, framer, completion_body(ex, generate, chat))


@get("/v1/models", responses=error_responses())
async def list_models(router: FromApp[RouterState]) -> Response[oa.ModelList]:
    created = int(router.catalog.started)
    catalog = router.catalog
    cards = [oa.ModelCard(id=m.id, created=created, type=m.type, context_length=catalog.context_lengths.get(m.id))
             for m in catalog.models]
    return as_json(oa.ModelList(data=cards))


ROUTES = [chat_completions, completions, list_models]
