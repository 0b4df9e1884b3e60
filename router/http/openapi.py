"""OpenAPI: Litestar's generated schema, with every route's real request and response bodies.

The `/v1` routes decode their bodies with msgspec themselves, so that a bad request gets an error
worded like OpenAI's. `JsonBody[T]` keeps that: it is a DTO that tells Litestar's schema generator
the body's type, and decodes the body with the route's own decoder (errors in OpenAI's envelope),
with no Litestar validation on top. Every route documents the error envelope for its error codes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar._openapi.schema_generation.plugins import StructSchemaPlugin
from litestar.dto import AbstractDTO
from litestar.dto.data_structures import DTOFieldDefinition
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference, Schema
from litestar.typing import FieldDefinition

from mlx_fleet.router.http.decoding import decode_request
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import Envelope

T = TypeVar("T")


class JsonBody(AbstractDTO[T], Generic[T]):
    """A request body of type `T`, decoded by `decode` (set by `json_body`)."""

    decode: ClassVar[Callable[[bytes], Any]]

    @classmethod
    def create_for_field_definition(cls, field_definition: FieldDefinition, handler_id: str,
                                    backend_cls: Any = None) -> None:
        return  # no DTO backend: the body is decoded by `decode`

    @classmethod
    def is_supported_model_type_field(cls, field_definition: FieldDefinition) -> bool:
        return False  # never a return DTO

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_openapi_schema(cls, field_definition: FieldDefinition, handler_id: str,
                              schema_creator: Any) -> Reference | Schema:
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.model_type))

    def decode_bytes(self, value: bytes) -> Any:
        return type(self).decode(value)


def json_body(model: type[T], decode: Callable[[bytes], T]) -> type[JsonBody[T]]:
    """The DTO for a route whose body is a `model`, decoded by `decode`."""
    base = JsonBody[model]  # type: ignore[valid-type]
    return type(f"{model.__name__}Body", (base,), {"decode": staticmethod(decode)})


_ERRORS = {400: "Invalid request", 401: "No key or a wrong key", 403: "The key may not do this",
           404: "Unknown model, route or record", 409: "Conflicts with what exists", 413: "Body too large", 429: "Too many requests for this model",
           500: "The model's worker failed", 503: "The fleet cannot serve this now"}


def error_responses(*statuses: int, envelope: type = Envelope) -> dict[int, ResponseSpec]:
    """The error envelope for each of `statuses` (every route: 400, 401, 403, 500, 503)."""
    codes = sorted({400, 401, 403, 500, 503, *statuses})
    return {code: ResponseSpec(data_container=envelope, description=_ERRORS.get(code, "Error"),
                               generate_examples=False) for code in codes}


def body_dto(kind: type) -> type:
    """The DTO of a route whose JSON body is a `kind`, decoded with OpenAI-worded errors."""
    return json_body(kind, functools.partial(decode_request, kind=kind))


STREAMED = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages")


def document_streams(app: Litestar) -> None:
    """With `"stream": true` these routes answer 200 with server-sent events, not JSON: a second
    media type for one status, which a handler's annotations cannot say."""
    paths = app.openapi_schema.paths or {}
    for path in STREAMED:
        operation = paths[path].post
        assert operation is not None and operation.responses is not None
        ok = operation.responses["200"]
        assert isinstance(ok, OpenAPIResponse) and ok.content is not None
        # OpenAPI 3.1: the schema of one event (its fields as the SSE format names them)
        ok.content["text/event-stream"] = OpenAPIMediaType(schema=Schema(
            type=OpenAPIType.OBJECT, required=["data"], description="Server-sent events, one per chunk",
            properties={"data": Schema(type=OpenAPIType.STRING,
                                       description="one chunk or event object as JSON (chat and text completions "
                                                   "end with [DONE])"),
                        "event": Schema(type=OpenAPIType.STRING)}))


class ClosedStructs(StructSchemaPlugin):
    """A struct that refuses unknown fields says so (`additionalProperties: false`): the router
    answers an unknown request field with 400, as OpenAI does, so the schema must not allow one."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if msgspec.inspect.type_info(field_definition.type_).forbid_unknown_fields:  # type: ignore[union-attr]
            schema.additional_properties = False
        return schema


# The schema documents the /v1 and the /admin routes alike: its routes are marked for the guard,
# which lets the admin key read them as well as any API key.
SCHEMA_OPT = {"schema": True}


def openapi_config() -> OpenAPIConfig:
    docs = Router("/docs", route_handlers=[], include_in_schema=False, dto=None, return_dto=None, opt=SCHEMA_OPT)
    return OpenAPIConfig(title="mlx-fleet", version="0.1.0", openapi_router=docs, create_examples=False,
                         render_plugins=[ScalarRenderPlugin()])


@get("/openapi.json", opt=SCHEMA_OPT, include_in_schema=False)
async def openapi_json(request: Request) -> Response:
    """The schema at the path clients look for first (Litestar serves it under /docs too)."""
    return as_json(request.app.openapi_schema.to_schema())


ROUTES = [openapi_json]
