"""`POST /v1/embeddings`: inputs in, one forward pass per chunk in the worker, vectors out.

The worker sends float32 little-endian rows, which is exactly OpenAI's base64 layout, so
`encoding_format = "base64"` costs one base64 encode per vector and no float parsing at all.
"""

from __future__ import annotations

import array
import base64
import sys
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.params import JSONBody
from msgspec import Meta

from mlx_fleet.protocol import Embed, Embeddings, Kind, encode
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.openapi import body_dto, error_responses
from mlx_fleet.router.http.usage import usage_record
from mlx_fleet.router.router_state import FromApp, RouterState

MAX_INPUTS = 2048


class EmbeddingRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    # A string, a list of strings, a list of token ids, or a list of lists of token ids.
    input: str | Annotated[list[Any], Meta(max_length=MAX_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None


class EmbeddingData(msgspec.Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of float32 little-endian


class EmbeddingUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


def _inputs(raw: str | list[Any]) -> Embed:
    if isinstance(raw, str):
        return Embed(texts=(raw,))
    if not raw:
        raise ApiError(400, "Invalid 'input': empty array. Expected an array with minimum length 1.",
                       param="input", code="empty_array")
    if all(isinstance(x, str) for x in raw):
        return Embed(texts=tuple(raw))
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        return Embed(tokens=(tuple(raw),))
    if all(isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x) for x in raw):
        return Embed(tokens=tuple(tuple(x) for x in raw))
    raise ApiError(400, "'input' must be a string, an array of strings, an array of token ids, or an array "
                        "of arrays of token ids.", param="input", code="invalid_type")


def _vector(row: bytes, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(row).decode()
    floats = array.array("f")
    floats.frombytes(row)
    if sys.byteorder != "little":
        floats.byteswap()
    return floats.tolist()


@post("/v1/embeddings", status_code=200, opt={"scope": "embeddings"}, dto=body_dto(EmbeddingRequest),
      return_dto=None, responses=error_responses(404, 413, 429))
async def embeddings(request: Request, router: FromApp[RouterState],
                     data: JSONBody[EmbeddingRequest]) -> Response[EmbeddingList]:
    req = data
    model, name = await router.catalog.resolve(router.fleet, req.model, embeddings=True)
    if model.type != "embeddings":
        raise ApiError(400, f"Model '{req.model}' does not support embeddings.", param="model",
                       code="model_not_supported")
    usage = usage_record(request, model.id)
    ex = router.exchange(name, "emb-", usage)
    end = await ex.one_answer(Kind.EMBED, encode(_inputs(req.input)))
    assert isinstance(end, Embeddings)
    if req.dimensions is not None and req.dimensions != end.dim:
        raise ApiError(400, f"Model '{req.model}' gives {end.dim}-dimensional embeddings and cannot shorten "
                            f"them; 'dimensions' must be {end.dim} or left out.", param="dimensions",
                       code="unsupported_value")
    width = end.dim * 4
    vectors = [EmbeddingData(index=i, embedding=_vector(end.vectors[i * width:(i + 1) * width], req.encoding_format))
               for i in range(len(end.token_counts))]
    tokens = sum(end.token_counts)
    if usage is not None:
        usage.tokens(tokens, 0)
    payload = EmbeddingList(data=vectors, model=name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))
    return as_json(payload)


ROUTES = [embeddings]
