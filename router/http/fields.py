"""Field types that more than one API's request bodies share: bounds live in the annotations, so
the decoder checks them in one pass and `http.errors.validation_error` words the failures like
OpenAI's."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

Temperature = Annotated[float, Meta(ge=0, le=2)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
# The wire's msgpack integers hold 64 bits: a bigger value is the client's 400, not a 500 at encoding.
INT64 = 2**63 - 1
PositiveInt = Annotated[int, Meta(ge=1, le=INT64)]
NonNegativeInt = Annotated[int, Meta(ge=0, le=INT64)]


class StrictRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A request body (or part of one) that refuses unknown fields, as OpenAI's APIs do
    ("Unrecognized request argument supplied")."""
