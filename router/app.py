"""The HTTP face of the fleet: a Litestar app that validates, forwards over ZeroMQ, and frames SSE.

It never imports MLX. Request bodies are read raw and decoded with msgspec in one pass, so
validation errors can be worded like OpenAI's and nothing is parsed twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from mlx_fleet.config import FleetConfig
from mlx_fleet.protocol import Failure, Generate, GetStatus
from router import admin
from router import openai_types as oa
from router.completions import (
    Exchange,
    chat_input,
    completion_input,
    decode_request,
    resolve_model,
    respond,
    sampling_from,
)
from router.errors import ApiError, api_error_handler, http_error_handler, internal_error_handler
from router.fleet_client import FleetClient, SupervisorUnavailable

MAX_BODY_BYTES = 32 * 1024 * 1024
log = logging.getLogger("mlx_fleet.router")


def _client(state: State) -> FleetClient:
    return state.fleet


def _config(state: State) -> FleetConfig:
    return state.config


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request, state: State) -> Response:
    config = _config(state)
    req = decode_request(await request.body(), oa.ChatCompletionRequest)
    model = resolve_model(config, req.model)
    sampling = sampling_from(req, req.max_completion_tokens or req.max_tokens, config.server.default_max_tokens)
    ex = Exchange.new(_client(state), req.model, "chatcmpl")
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return await respond(ex, Generate(chat_input(req, model), sampling), True, req.stream, include_usage)


@post("/v1/completions", status_code=200)
async def completions(request: Request, state: State) -> Response:
    config = _config(state)
    req = decode_request(await request.body(), oa.CompletionRequest)
    resolve_model(config, req.model)
    sampling = sampling_from(req, req.max_tokens, config.server.default_max_tokens)
    ex = Exchange.new(_client(state), req.model, "cmpl")
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return await respond(ex, Generate(completion_input(req), sampling), False, req.stream, include_usage)


@get("/v1/models")
async def list_models(state: State) -> Response:
    config = _config(state)
    cards = [oa.ModelCard(id=m.id, created=int(state.started), type=m.type) for m in config.models]
    return Response(msgspec.json.encode(oa.ModelList(data=cards)), media_type="application/json")


@get("/health")
async def health(state: State) -> Response:
    try:
        await _client(state).call(GetStatus(), timeout=2.0)
    except SupervisorUnavailable as e:
        raise ApiError(503, f"The model server is not available: {e}", code="supervisor_unavailable") from None
    return Response(b'{"status":"ok"}', media_type="application/json")


def create_app(
    config: FleetConfig,
    frontend: str,
    started: float,
    supervisor_alive: Callable[[], bool] | None = None,
    watch_interval: float = 0.2,
) -> Litestar:
    """`supervisor_alive` lets the router fail fast (503) instead of waiting on a dead supervisor."""

    async def watch(client: FleetClient) -> None:
        while supervisor_alive():
            await asyncio.sleep(watch_interval)
        log.error("the supervisor process has exited")
        client.fail_all(Failure("supervisor_unavailable", "The model server's supervisor has stopped.", 503))

    @asynccontextmanager
    async def fleet_connection(app: Litestar) -> AsyncIterator[None]:
        client = FleetClient(frontend)
        client.start()
        app.state.fleet = client
        watcher = asyncio.create_task(watch(client), name="supervisor-watch") if supervisor_alive else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            await client.close()

    return Litestar(
        route_handlers=[chat_completions, completions, list_models, health, *admin.ROUTES],
        lifespan=[fleet_connection],
        state=State({"config": config, "started": started}),
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=None,
    )
