"""Every error the HTTP API returns: in OpenAI's envelope {"error": {message, type, param, code}},
or, on Anthropic's routes (/v1/messages), in Anthropic's {"type": "error", "error": {type, message}}."""

from __future__ import annotations

import logging
import re
from typing import Literal

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException, ValidationException

from mlx_fleet.protocol import Failure
from mlx_fleet.router.http.encoding import as_json

log = logging.getLogger("mlx_fleet.router")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
          404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_exceeded"}


# Anthropic names an error by its status alone; any other 5xx is its generic "api_error".
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                    429: "rate_limit_error", 529: "overloaded_error"}


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class Envelope(msgspec.Struct):
    error: ErrorBody


class AnthropicError(msgspec.Struct):
    type: str
    message: str


class AnthropicEnvelope(msgspec.Struct):
    """Anthropic's error shape, which `/v1/messages` answers with."""

    type: Literal["error"]
    error: AnthropicError


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.retry_after = status, message, param, code, retry_after

    @classmethod
    def from_failure(cls, failure: Failure) -> ApiError:
        return cls(failure.status, failure.message, param=failure.param, code=failure.code,
                   retry_after=failure.retry_after)

    def envelope(self) -> Envelope:
        kind = _TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return Envelope(ErrorBody(self.message, kind, self.param, self.code))

    def anthropic_envelope(self) -> AnthropicEnvelope:
        kind = _ANTHROPIC_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "api_error")
        return AnthropicEnvelope("error", AnthropicError(kind, self.message))

    def response(self, anthropic: bool = False) -> Response:
        body = self.anthropic_envelope() if anthropic else self.envelope()
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        if self.status >= 500 and self.code == "worker_crashed":
            headers["x-should-retry"] = "false"
        return as_json(body, self.status, headers)


def api_error_handler(_: Request, exc: ApiError) -> Response:
    return exc.response()


def _from_http(request: Request, exc: HTTPException) -> ApiError:
    if isinstance(exc, NotFoundException):
        return ApiError(404, f"Invalid URL ({request.method} {request.url.path})")
    if isinstance(exc, MethodNotAllowedException):
        return ApiError(405, f"Method {request.method} not allowed for {request.url.path}")
    if exc.status_code == 413:
        return ApiError(413, "Request body is too large.", code="request_too_large")
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        return _parameter_error(exc.extra[0])
    return ApiError(exc.status_code, str(exc.detail))


def http_error_handler(request: Request, exc: HTTPException) -> Response:
    return _from_http(request, exc).response()


def _internal(request: Request, exc: Exception) -> ApiError:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ApiError(500, "The server had an error while processing your request.", code="internal_error")


def _parameter_error(problem: dict) -> ApiError:
    """A query or path parameter Litestar refused, or a missing body (Litestar hands a route with a
    typed body nothing to decode when the body is empty)."""
    if problem.get("source") == "body":
        return ApiError(400, "We could not parse the JSON body of your request. The body is empty.")
    key = problem.get("key")
    return ApiError(400, f"Invalid '{key}': {problem.get('message')}.", param=key, code="invalid_value")


def internal_error_handler(request: Request, exc: Exception) -> Response:
    return _internal(request, exc).response()


# Anthropic's routes answer every error in Anthropic's shape (its SDK and Claude Code read that).
ANTHROPIC_ERROR_HANDLERS = {
    ApiError: lambda _, exc: exc.response(anthropic=True),
    HTTPException: lambda request, exc: _from_http(request, exc).response(anthropic=True),
    Exception: lambda request, exc: _internal(request, exc).response(anthropic=True),
}


# -- request decoding errors -----------------------------------------------------------------

_AT = re.compile(r"^(.*) - at `\$\.?(.*)`$")
_JSON_TYPES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "a boolean",
               "array": "an array", "object": "an object", "null": "null"}


def validation_error(error: msgspec.ValidationError) -> ApiError:
    """Word msgspec's validation errors the way OpenAI words its own."""
    text = str(error)
    match = _AT.match(text)
    problem, param = (match.group(1), match.group(2) or None) if match else (text, None)
    if param is None and problem.startswith("Expected `object`"):
        return ApiError(400, "Request body must be a JSON object.")
    unknown = re.match(r"Object contains unknown field `(.+)`", problem)
    if unknown:
        return ApiError(400, f"Unrecognized request argument supplied: {unknown.group(1)}")
    missing = re.match(r"Object missing required field `(.+)`", problem)
    if missing:
        name = f"{param}.{missing.group(1)}" if param else missing.group(1)
        return ApiError(400, f"Missing required parameter: '{name}'.", param=name,
                        code="missing_required_parameter")
    bound = re.match(r"Expected `(\w+)` (>=|<=) (\S+)", problem)
    if bound:
        kind, op, limit = bound.groups()
        number = "integer" if kind == "int" else "decimal"
        side = "below minimum" if op == ">=" else "above maximum"
        return ApiError(400, f"Invalid '{param}': {number} {side} value. Expected a value {op} {limit}.",
                        param=param, code=f"{number}_{side.replace(' ', '_')}_value".replace("maximum", "max")
                        .replace("minimum", "min"))
    length = re.match(r"Expected `array` of length (>=|<=) (\d+)", problem)
    if length:
        op, limit = length.groups()
        if op == ">=":
            return ApiError(400, f"Invalid '{param}': empty array. Expected an array with minimum length {limit}.",
                            param=param, code="empty_array")
        return ApiError(400, f"Invalid '{param}': array too long. Expected an array with maximum length {limit}.",
                        param=param, code="array_above_max_length")
    typed = re.match(r"Expected `(.+?)`, got `(\w+)`", problem)
    if typed:
        want, got = typed.groups()
        want_words = " or ".join(_JSON_TYPES.get(w.strip(), w.strip()) for w in want.split("|"))
        return ApiError(400, f"Invalid type for '{param}': expected {want_words}, but got "
                             f"{_JSON_TYPES.get(got, got)} instead.", param=param, code="invalid_type")
    return ApiError(400, f"Invalid '{param}': {problem}." if param else f"{problem}.", param=param,
                    code="invalid_value")
