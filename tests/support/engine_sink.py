"""What an engine's `step` writes to, for the tests that drive an engine in-process: each request's
text and its final frame, decoded as the router would."""

from __future__ import annotations

from mlx_fleet.protocol import Done, Kind, decode_delta, decode_end


class Sink:
    def __init__(self) -> None:
        self.text: dict[bytes, str] = {}
        self.ends: dict[bytes, Done] = {}

    def __call__(self, kind: bytes, rid: bytes, body: bytes) -> None:
        if kind == Kind.DELTA:
            self.text[rid] = self.text.get(rid, "") + decode_delta(body).text
        else:
            self.ends[rid] = decode_end(body)
