"""Stop strings matched on text, across token boundaries, and never emitted.

A token can end halfway through a stop string, so text that might be the start of one is held
back until the next token settles it. Only the longest such tail is held: everything before it
is safe to stream at once.
"""

from __future__ import annotations


class StopMatcher:
    __slots__ = ("_stops", "_held", "matched")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.matched: str | None = None  # the stop string that was reached (Anthropic reports it)

    def feed(self, text: str) -> tuple[str, bool]:
        """Return the text that is safe to emit, and whether a stop string was reached."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        first, stop = min(((i, s) for s in self._stops if (i := buffer.find(s)) >= 0), default=(-1, None))
        if first >= 0:
            self._held = ""
            self.matched = stop
            return buffer[:first], True
        keep = self._partial_tail(buffer)
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """At the end of generation, a held tail that never became a stop string is real text."""
        held, self._held = self._held, ""
        return held

    def _partial_tail(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:n]):
                    best = n
                    break
        return best
