"""`/admin/models/{model_id}/<action>`: a model's worker log (and why its last load failed), what a
load would do now (dry run), whether it is ready, and whether it answers (one short request).

Model ids may hold `/` (hub-style names), and a path parameter that may hold `/` must come last:
each route is declared at `/admin/models/<action>/{model_id}` (as `load/{model_id}` is), and the
design documents' `/admin/models/{model_id}/<action>` is rerouted to it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path, PurePath
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.types import ASGIApp, Receive, Scope, Send

from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import (
    ChatInput,
    Diagnose,
    Diagnosis,
    DryRun,
    DryRunResult,
    Embed,
    Embeddings,
    FleetStatus,
    Generate,
    GetStatus,
    Kind,
    Message,
    Sampling,
    encode,
)
from mlx_fleet.router.fleet.calls import ask
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.openapi import error_responses
from mlx_fleet.router.router_state import FromApp, RouterState
from mlx_fleet.state import worker_logs


async def _model(router: RouterState, model_id: str | PurePath) -> ModelConfig:
    """The configured or catalog model an admin path names (404 if none or disabled)."""
    model, _ = await router.catalog.resolve(router.fleet, str(model_id).strip("/"))
    return model


def model_path(action: str) -> str:
    return f"/admin/models/{action}/{{model_id:path}}"


class Reroute(Response):
    """Answer as the app answers `path` (same method, headers, query and body): the design
    documents' `/admin/models/{model_id}/<action>` form, for any id, served by the typed routes
    (guards, parameter checks and all) without writing any of them twice."""

    def __init__(self, path: str) -> None:
        super().__init__(content=None)
        self.path = path

    def to_asgi_response(self, app: Litestar | None, request: Request, **_: Any) -> ASGIApp:  # type: ignore[override]
        async def reroute(scope: Scope, receive: Receive, send: Send) -> None:
            fresh = {k: v for k, v in request.scope.items() if k not in ("route_handler", "path_params", "state")}
            await request.app({**fresh, "path": self.path, "raw_path": self.path.encode(), "state": {}}, receive, send)

        return reroute


def _alias(target: PurePath, actions: tuple[str, ...]) -> Reroute:
    model_id, _, action = str(target).strip("/").rpartition("/")
    if not model_id or action not in actions:
        raise ApiError(404, f"Invalid URL (/admin/models/{str(target).strip('/')})")
    return Reroute(f"/admin/models/{action}/{model_id}")


@get("/admin/models/{target:path}", include_in_schema=False)
async def model_get_alias(target: FromPath[Path]) -> Response:
    """`GET /admin/models/{model_id}/logs` and `/readiness`."""
    return _alias(target, ("logs", "readiness"))


@post("/admin/models/{target:path}", include_in_schema=False)
async def model_post_alias(target: FromPath[Path]) -> Response:
    """`POST /admin/models/{model_id}/dry-run` and `/test`."""
    return _alias(target, ("dry-run", "test"))


class ModelLogs(msgspec.Struct, kw_only=True):
    model: str
    lines: list[str]
    offset: int               # pass back as `after` to get only what is written next (--follow)
    diagnosis: Diagnosis | None = None


@get(model_path("logs"), responses=error_responses(404))
async def model_logs(router: FromApp[RouterState], model_id: FromPath[Path],
                     tail: Annotated[int, QueryParameter(ge=1, le=10000)] = 100, diagnose: FromQuery[bool] = False,
                     after: Annotated[int | None, QueryParameter(ge=0, le=2**53)] = None) -> Response[ModelLogs]:
    """The last `tail` lines of the model's worker output (or those after `after`); `diagnose`
    adds its last failed load (reason, traceback), detected type, size estimate and config entry."""
    model = await _model(router, model_id)
    directory = worker_logs.logs_dir(Path(router.config.server.state_dir))
    if after is None:
        lines, offset = await asyncio.to_thread(worker_logs.tail, directory, model.id, tail)
    else:
        lines, offset = await asyncio.to_thread(worker_logs.read_after, directory, model.id, after, tail)
    diagnosis = await ask(router.fleet, Diagnose(model.id), Diagnosis) if diagnose else None
    return as_json(ModelLogs(model=model.id, lines=lines, offset=offset, diagnosis=diagnosis))


@post(model_path("dry-run"), status_code=200, responses=error_responses(404))
async def model_dry_run(router: FromApp[RouterState], model_id: FromPath[Path]) -> Response[DryRunResult]:
    """What loading the model would do now (type, size, fit, evictions, warnings); nothing is loaded."""
    model = await _model(router, model_id)
    return as_json(await ask(router.fleet, DryRun(model.id), DryRunResult))


class Readiness(msgspec.Struct, kw_only=True):
    model: str
    ready: bool
    state: str


class TestResult(msgspec.Struct, kw_only=True):
    model: str
    type: str
    latency_ms: float
    output: str | None = None  # generated text (text and vision models)
    finish_reason: str | None = None
    prompt_tokens: int
    completion_tokens: int = 0
    dimensions: int | None = None  # embedding width (embedding models)


@get(model_path("readiness"), responses=error_responses(404),
     response_description="200 when the model's worker is ready (or busy), 503 with the same body otherwise")
async def model_readiness(router: FromApp[RouterState], model_id: FromPath[Path]) -> Response[Readiness]:
    model = await _model(router, model_id)
    status = await ask(router.fleet, GetStatus(), FleetStatus)
    current = next((m.state for m in status.models if m.id == model.id), "stopped")  # never asked for: no slot
    ready = current in ("ready", "busy")
    return as_json(Readiness(model=model.id, ready=ready, state=current), 200 if ready else 503)


@post(model_path("test"), status_code=200, responses=error_responses(404, 429))
async def model_test(router: FromApp[RouterState], model_id: FromPath[Path],
                     prompt: Annotated[str, QueryParameter(max_length=2000)] = "Say hello.",
                     max_tokens: Annotated[int, QueryParameter(ge=1, le=256)] = 16) -> Response[TestResult]:
    """One short request through the same path as clients' (loading the model if needed)."""
    model = await _model(router, model_id)
    ex = router.exchange(model.id, "test-")
    started = time.perf_counter()
    if model.type == "embeddings":
        end = await ex.one_answer(Kind.EMBED, encode(Embed(texts=(prompt,))))
        assert isinstance(end, Embeddings)
        result = TestResult(model=model.id, type=model.type, latency_ms=_ms(started),
                            prompt_tokens=sum(end.token_counts), dimensions=end.dim)
    else:
        sampling = Sampling(max_tokens=max_tokens, temperature=0.0)
        ex.open(Kind.GENERATE, encode(Generate(ChatInput((Message("user", prompt),)), sampling)))
        reply = await ex.collect(ex.stream)  # type: ignore[arg-type]
        done = reply.done
        assert done is not None
        result = TestResult(model=model.id, type=model.type, latency_ms=_ms(started), output=reply.text,
                            finish_reason=done.finish_reason, prompt_tokens=done.usage.prompt_tokens,
                            completion_tokens=done.usage.completion_tokens)
    return as_json(result)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


ROUTES = [model_logs, model_dry_run, model_readiness, model_test, model_get_alias, model_post_alias]
