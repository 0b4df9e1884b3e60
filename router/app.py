"""The HTTP face of the fleet: a Litestar app that validates, forwards over ZeroMQ, and frames SSE.

It never imports MLX. Request bodies are read raw and decoded with msgspec in one pass, so
validation errors can be worded like OpenAI's and nothing is parsed twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response, get, post
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from mlx_fleet.config import FleetConfig
from mlx_fleet.protocol import Failure, Generate
from mlx_fleet.runtime import Endpoints
from router import admin, catalog_admin, messages, responses
from router import openai_types as oa
from router.admission import Admission
from router.catalog_view import CatalogView
from router.chat_request import chat_input, chat_logprobs, response_format
from router.completions import (
    CompletionFrames,
    Exchange,
    completion_body,
    completion_input,
    decode_request,
    default_temperature,
    sampling_from,
)
from router.embeddings import embeddings
from router.errors import ApiError, api_error_handler, http_error_handler, internal_error_handler
from router.event_stream import respond
from router.fleet_client import FleetClient, SupervisorUnavailable
from router.images import ImagePolicy
from router.security import Guard, host_check_factory

log = logging.getLogger("mlx_fleet.router")


def _exchange(state: State, model: str, prefix: str) -> Exchange:
    return Exchange.new(state.fleet, state.admission, model, prefix)


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request, state: State) -> Response:
    config: FleetConfig = state.config
    req = decode_request(await request.body(), oa.ChatCompletionRequest)
    model, name = await state.catalog.resolve(state.fleet, req.model)
    sampling = sampling_from(req, req.max_completion_tokens or req.max_tokens, config.server.default_max_tokens,
                             default_temperature(config, model))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    logprobs = chat_logprobs(req)
    messages = await chat_input(req, model, state.images, config.server.max_images_per_request)
    ex = _exchange(state, name, "chatcmpl")
    generate = Generate(messages, sampling, response_format(req), logprobs)
    framer = CompletionFrames(ex, True, include_usage, bool(logprobs)) if req.stream else None
    return await respond(ex, generate, framer, completion_body(ex, generate, True))


@post("/v1/completions", status_code=200)
async def completions(request: Request, state: State) -> Response:
    config: FleetConfig = state.config
    req = decode_request(await request.body(), oa.CompletionRequest)
    model, name = await state.catalog.resolve(state.fleet, req.model)
    if model.type == "embeddings":
        raise ApiError(400, f"Model '{req.model}' does not support text completions.", param="model",
                       code="model_not_supported")
    sampling = sampling_from(req, req.max_tokens, config.server.default_max_tokens, default_temperature(config, model))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    ex = _exchange(state, name, "cmpl")
    generate = Generate(completion_input(req), sampling, None, req.logprobs)
    framer = CompletionFrames(ex, False, include_usage, bool(req.logprobs)) if req.stream else None
    return await respond(ex, generate, framer, completion_body(ex, generate, False))


@get("/v1/models")
async def list_models(state: State) -> Response:
    return Response(state.catalog.models_body, media_type="application/json")


@get("/health", opt={"public": True})
async def health(state: State) -> Response:
    """Ready: the supervisor answers, the catalog is known and (with `wait_for_profile`) the
    startup profile's models are loaded."""
    try:
        failure = await state.fleet.ping(timeout=2.0)
    except SupervisorUnavailable as e:
        raise ApiError(503, f"The model server is not available: {e}", code="supervisor_unavailable") from None
    if failure is not None:
        raise ApiError.from_failure(failure)
    if not state.catalog.loaded.is_set():
        raise ApiError(503, "The model catalog is not loaded yet.", code="catalog_loading")
    if state.admission.draining:
        raise ApiError(503, "The server is shutting down.", code="shutting_down")
    return Response(b'{"status":"ok"}', media_type="application/json")


ROUTES = [chat_completions, completions, responses.responses, *messages.ROUTES, embeddings, list_models, health,
          *admin.ROUTES, *catalog_admin.ROUTES]


def create_app(
    config: FleetConfig,
    endpoints: Endpoints,
    started: float,
    supervisor_alive: Callable[[], bool] | None = None,
    watch_interval: float = 0.2,
) -> Litestar:
    """`supervisor_alive` lets the router fail fast (503) instead of waiting on a dead supervisor."""
    server = config.server

    async def watch(client: FleetClient) -> None:
        while supervisor_alive():
            await asyncio.sleep(watch_interval)
        log.error("the supervisor process has exited")
        client.fail_all(Failure("supervisor_unavailable", "The model server's supervisor has stopped.", 503))

    @asynccontextmanager
    async def fleet_connection(app: Litestar) -> AsyncIterator[None]:
        client = FleetClient(endpoints.frontend, endpoints.sink)
        client.start()
        app.state.fleet = client
        watcher = asyncio.create_task(watch(client), name="supervisor-watch") if supervisor_alive else None
        catalog = asyncio.create_task(app.state.catalog.keep_fetching(client), name="catalog-fetch")
        try:
            yield
        finally:
            for task in (watcher, catalog):
                if task is not None:
                    task.cancel()
            await client.close()

    host_check = host_check_factory(server)
    return Litestar(
        route_handlers=ROUTES,
        lifespan=[fleet_connection],
        state=State({"config": config, "started": started, "catalog": CatalogView(config, started),
                     "admission": Admission(server.max_requests_per_model, server.max_requests),
                     "images": ImagePolicy(max_dimension=server.image_max_dimension, allow_urls=server.image_urls,
                                           allowed_hosts=tuple(server.image_allowed_hosts))}),
        guards=[Guard(server)],
        middleware=[host_check] if host_check else [],
        cors_config=CORSConfig(allow_origins=server.cors_origins) if server.cors_origins else None,
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=int(server.max_body_size),
        openapi_config=None,
    )


def begin_drain(app: Litestar, drain_timeout: float) -> None:
    """SIGTERM: refuse new requests now; after `drain_timeout`, end the ones still running cleanly
    (an error event, then the end of the stream) so that uvicorn can finish its shutdown."""
    admission: Admission = app.state.admission
    if admission.draining:
        return
    admission.draining = True
    log.info("draining: no new requests; in-flight ones have %.0f s to finish", drain_timeout)

    def end_the_rest() -> None:
        client: FleetClient = app.state.fleet
        if client.streams:
            log.warning("drain timeout: ending %d request(s)", len(client.streams))
        client.fail_all(Failure("shutting_down", "The server is shutting down.", 503))

    asyncio.get_running_loop().call_later(drain_timeout, end_the_rest)
