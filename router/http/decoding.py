"""Request bodies in: every JSON body the router reads is decoded here, in one pass, with errors
worded like OpenAI's (`http.errors.validation_error`), whichever API or admin route reads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from mlx_fleet.router.http.errors import ApiError, validation_error

_DECODERS: dict[type, Callable[[bytes], object]] = {}
RequestT = TypeVar("RequestT")
T = TypeVar("T")


def decode_request(body: bytes, kind: type[RequestT]) -> RequestT:
    """A request body as `kind` (a msgspec struct), or a 400 worded like OpenAI's."""
    decoder = _DECODERS.get(kind) or _DECODERS.setdefault(kind, msgspec.json.Decoder(kind).decode)
    if not body.strip():
        raise ApiError(400, "We could not parse the JSON body of your request. The body is empty.")
    try:
        return decoder(body)
    except msgspec.ValidationError as e:
        raise validation_error(e) from None
    except msgspec.DecodeError:
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means "
                                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                                "payload, but what was sent was not valid JSON.)") from None
        raise ApiError(400, "Request body must be a JSON object.") from None


def checked(raw: object, kind: type[T], param: str) -> T:
    """`raw` (a part of a body already decoded as JSON) converted to `kind`; a validation error
    names `param` as where it is."""
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as e:
        text = str(e)
        where = text.replace("`$", f"`$.{param}", 1) if " - at `$" in text else f"{text} - at `$.{param}`"
        raise validation_error(msgspec.ValidationError(where)) from None
