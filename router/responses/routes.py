"""OpenAI's Responses API: `POST /v1/responses`, stateless (nothing is stored; `store` is accepted).

A translator on the chat route's internals: the request becomes the same `Generate` a chat
completion sends (`responses.input`), and the worker's stream becomes Responses' typed events
(`responses.events`).
"""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.params import JSONBody

from mlx_fleet.router.fleet.event_stream import respond
from mlx_fleet.router.http.encoding import line_json
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.http.usage import usage_record
from mlx_fleet.router.responses import types as rt
from mlx_fleet.router.responses.events import ResponseEvents, ResponseShape, output_of
from mlx_fleet.router.responses.input import responses_generate
from mlx_fleet.router.router_state import FromApp, RouterState


@post("/v1/responses", status_code=200, opt={"scope": "responses"}, dto=body_dto(rt.ResponsesRequest),
      return_dto=None, responses=error_responses(404, 413, 429))
async def responses(request: Request, router: FromApp[RouterState],
                    data: JSONBody[rt.ResponsesRequest]) -> Response[rt.ResponseObject]:
    req = data
    model, name = await router.catalog.resolve(router.fleet, req.model)
    generate = await responses_generate(req, model, router)
    ex = router.exchange(name, "resp_", usage_record(request, model.id))
    shape = ResponseShape(ex, req, generate.sampling.temperature, generate.sampling.top_p)
    return await respond(ex, generate, ResponseEvents(shape) if req.stream else None,
                         lambda reply: line_json(shape.finished(output_of(reply, reply.done), reply.done)))


ROUTES = [responses]
