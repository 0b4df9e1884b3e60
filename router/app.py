"""The HTTP face of the fleet: a Litestar app that validates, forwards over ZeroMQ, and frames SSE.

It never imports MLX. Request bodies are read raw and decoded with msgspec in one pass, so
validation errors can be worded like OpenAI's and nothing is parsed twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import JSONBody

from mlx_fleet.state import db
from mlx_fleet.config import FleetConfig, ModelConfig
from mlx_fleet.state.keys import KeyIndex
from mlx_fleet.protocol import Failure, Generate
from mlx_fleet.runtime import Endpoints
from mlx_fleet.router import (
    admin,
    admin_keys,
    admin_models,
    admin_system,
    admin_usage,
    catalog_admin,
    dashboard,
    messages,
    metrics,
    responses,
)
from mlx_fleet.router import openai_types as oa
from mlx_fleet.router.admission import Admission
from mlx_fleet.router.catalog_view import CatalogView
from mlx_fleet.router.chat_request import chat_input, chat_logprobs, response_format
from mlx_fleet.router.completions import (
    CompletionFrames,
    Exchange,
    completion_body,
    completion_input,
    default_temperature,
    sampling_from,
)
from mlx_fleet.router.embeddings import embeddings
from mlx_fleet.router.errors import ApiError, api_error_handler, http_error_handler, internal_error_handler
from mlx_fleet.router.event_stream import respond
from mlx_fleet.router.fleet_client import FleetClient, SupervisorUnavailable
from mlx_fleet.router.images import ImagePolicy
from mlx_fleet.router.openapi import ClosedStructs, body_dto, document_streams, error_responses, openapi_config
from mlx_fleet.router.security import Guard, host_check_factory
from mlx_fleet.router.usage import UsageWriter, state_db_lifespan, usage_middleware_factory, usage_record

log = logging.getLogger("mlx_fleet.router")


def _exchange(request: Request, state: State, name: str, model: ModelConfig, prefix: str) -> Exchange:
    return Exchange.new(state.fleet, state.admission, name, prefix, usage_record(request, model.id))


@post("/v1/chat/completions", status_code=200, opt={"scope": "chat"}, dto=body_dto(oa.ChatCompletionRequest),
      return_dto=None, responses=error_responses(404, 413, 429))
async def chat_completions(request: Request, state: State,
                           data: JSONBody[oa.ChatCompletionRequest]) -> Response[oa.ChatCompletion]:
    config: FleetConfig = state.config
    req = data
    model, name = await state.catalog.resolve(state.fleet, req.model)
    sampling = sampling_from(req, req.max_completion_tokens or req.max_tokens, config.server.default_max_tokens,
                             default_temperature(config, model))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    logprobs = chat_logprobs(req)
    messages = await chat_input(req, model, state.images, config.server.max_images_per_request)
    ex = _exchange(request, state, name, model, "chatcmpl-")
    generate = Generate(messages, sampling, response_format(req), logprobs)
    framer = CompletionFrames(ex, True, include_usage, bool(logprobs)) if req.stream else None
    return await respond(ex, generate, framer, completion_body(ex, generate, True))


@post("/v1/completions", status_code=200, opt={"scope": "completions"}, dto=body_dto(oa.CompletionRequest),
      return_dto=None, responses=error_responses(404, 413, 429))
async def completions(request: Request, state: State, data: JSONBody[oa.CompletionRequest]) -> Response[oa.Completion]:
    config: FleetConfig = state.config
    req = data
    model, name = await state.catalog.resolve(state.fleet, req.model)
    if model.type == "embeddings":
        raise ApiError(400, f"Model '{req.model}' does not support text completions.", param="model",
                       code="model_not_supported")
    sampling = sampling_from(req, req.max_tokens, config.server.default_max_tokens, default_temperature(config, model))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    ex = _exchange(request, state, name, model, "cmpl-")
    generate = Generate(completion_input(req), sampling, None, req.logprobs)
    framer = CompletionFrames(ex, False, include_usage, bool(req.logprobs)) if req.stream else None
    return await respond(ex, generate, framer, completion_body(ex, generate, False))


@get("/v1/models", responses=error_responses())
async def list_models(state: State) -> Response[oa.ModelList]:
    return Response(state.catalog.models_body, media_type="application/json")


class Health(msgspec.Struct):
    status: str


@get("/health", opt={"public": True}, responses=error_responses())
async def health(state: State) -> Response[Health]:
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


@get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request) -> Response:
    """The schema at the path clients look for first (Litestar serves it under /docs too)."""
    return Response(request.app.openapi_schema.to_schema(), media_type="application/json")


ROUTES = [chat_completions, completions, responses.responses, *messages.ROUTES, embeddings, list_models, health,
          openapi_json, metrics.metrics, *admin.ROUTES, *catalog_admin.ROUTES, *admin_models.ROUTES,
          *admin_keys.ROUTES, *admin_usage.ROUTES, *admin_system.ROUTES,
          *dashboard.ROUTES]


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

    state_dir = Path(server.state_dir).expanduser()
    request_metrics = metrics.RequestMetrics()
    usage = UsageWriter(state_dir, float(config.usage.retention), observers=[request_metrics.observe])
    key_index = KeyIndex(db.db_path(state_dir))
    host_check = host_check_factory(server)
    guard = Guard(server, key_index)
    return Litestar(
        route_handlers=ROUTES,
        lifespan=[state_db_lifespan(usage, key_index), fleet_connection],
        on_startup=[document_streams],
        state=State({"config": config, "started": started, "catalog": CatalogView(config, started),
                     "admission": Admission(server.max_requests_per_model, server.max_requests),
                     "images": ImagePolicy(max_dimension=server.image_max_dimension, allow_urls=server.image_urls,
                                           allowed_hosts=tuple(server.image_allowed_hosts)),
                     "db_path": db.db_path(state_dir), "usage": usage, "metrics": request_metrics,
                     "capabilities": None, "sessions": guard.sessions}),
        guards=[guard],
        middleware=[usage_middleware_factory(usage.queue), *([host_check] if host_check else [])],
        cors_config=CORSConfig(allow_origins=server.cors_origins) if server.cors_origins else None,
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=int(server.max_body_size),
        openapi_config=openapi_config(),
        plugins=[ClosedStructs()],
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
