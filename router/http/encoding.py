"""Answers out: a JSON body (`as_json`, the one way every route answers with JSON), JSON that
stays on one line (`line_json`: server-sent events, and the whole replies built alongside them),
and a stream of server-sent events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import msgspec
from litestar import Response
from litestar.response import Stream

_json = msgspec.json.encode
# JSON leaves these unescaped, but clients that split a stream into lines the way Python's
# str.splitlines does (httpx's aiter_lines, which many OpenAI-SDK users' own loops use) break a
# line at each: a token holding one would cut its event in two.
_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def as_json(body: object, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer: `body` encoded, or `bytes` that are JSON already (a body built once, or as
    JSON directly)."""
    content = body if isinstance(body, bytes) else _json(body)
    return Response(content, status_code=status_code, media_type="application/json", headers=headers)


def line_json(value: object) -> bytes:
    """JSON that stays on one line for every line splitter."""
    out = _json(value)
    if b"\xc2\x85" in out or b"\xe2\x80" in out:
        for raw, escaped in _LINE_BREAKS:
            out = out.replace(raw, escaped)
    return out


def event_stream(events: AsyncIterator[bytes]) -> Stream:
    """Server-sent events, as written: no cache, and no proxy buffering them."""
    return Stream(events, media_type="text/event-stream", headers=_SSE_HEADERS)
