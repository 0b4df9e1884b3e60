"""Server-sent events: JSON that stays on one line, so a frame is never cut in two."""

from __future__ import annotations

import msgspec

_json = msgspec.json.encode
# JSON leaves these unescaped, but clients that split a stream into lines the way Python's
# str.splitlines does (httpx's aiter_lines, which many OpenAI-SDK users' own loops use) break a
# line at each: a token holding one would cut its event in two.
_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def line_json(value: object) -> bytes:
    """JSON that stays on one line for every line splitter."""
    out = _json(value)
    if b"\xc2\x85" in out or b"\xe2\x80" in out:
        for raw, escaped in _LINE_BREAKS:
            out = out.replace(raw, escaped)
    return out
