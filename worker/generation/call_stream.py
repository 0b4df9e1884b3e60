"""One tool call's arguments streamed as the model writes them, for the JSON format of Qwen and
Hermes (mlx-lm's `json_tools`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`).

mlx-lm's parsers read a whole block; this reads the block as it grows. Nothing is sent until the
block's head, `{"name": "<name>", "arguments": {`, is there: until then the text may still turn
out not to be a call, and a block that never gets that far is left to the parser at its close
(plain text if it does not parse, as before). From the `{` of the arguments on, every piece of
their text goes out as it comes, and their end is found by following JSON's strings and brackets,
so what the client concatenates is the arguments object exactly as the model wrote it: the
same value mlx-lm's parser reads from the block (checked when the block closes), as the model's
own text rather than a re-serialisation of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import regex

log = logging.getLogger(__name__)

# A call's head up to the arguments object's opening brace. `regex` (mlx-lm's own dependency)
# matches a prefix partially, which says whether more text could still complete the head.
_HEAD = regex.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*\{')


def is_json_tools(tokenizer: Any) -> bool:
    """Whether the model's calls are mlx-lm's `json_tools` format: the one this module streams,
    and the one a forced call's grammar writes."""
    return getattr(tokenizer.tool_parser, "__module__", "").endswith(".json_tools")


class CallStream:
    """Reads one call block's text as it arrives. `feed` returns the arguments text to send now;
    `name` is set (once) when the head has parsed, at which point the call has started."""

    __slots__ = ("name", "arguments", "_head", "_gave_up", "_depth", "_in_string", "_escaped")

    def __init__(self) -> None:
        self.name: str | None = None
        self.arguments = ""          # sent so far
        self._head = ""              # text before the head parsed
        self._gave_up = False        # the head cannot parse: the block is read whole at its close
        self._depth = 0              # open brackets of the arguments; 0 once they have ended
        self._in_string = False
        self._escaped = False

    @property
    def started(self) -> bool:
        return self.name is not None

    def feed(self, text: str) -> str:
        if self._gave_up:
            return ""
        if self.name is None:
            self._head += text
            match = _HEAD.match(self._head, partial=True)
            if match is None:
                self._gave_up = True
                return ""
            if match.partial:
                return ""
            self.name = json.loads(match.group(1))
            text = self._head[match.end() - 1:]  # from the arguments' "{"
            self._head = ""
        elif self._depth == 0:  # the arguments have ended: the rest of the block is not theirs
            return ""
        piece = text[:self._scan(text)]
        self.arguments += piece
        return piece

    def _scan(self, text: str) -> int:
        """How much of `text` belongs to the arguments (all of it until their closing bracket)."""
        depth, in_string, escaped = self._depth, self._in_string, self._escaped
        for i, ch in enumerate(text):
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
                if depth == 0:
                    self._depth, self._in_string, self._escaped = 0, False, False
                    return i + 1
        self._depth, self._in_string, self._escaped = depth, in_string, escaped
        return len(text)

    def check(self, block: str, parse: Callable[[str, Any], Any], tools: Any) -> bool:
        """At the block's close: whether mlx-lm's parser reads the same call from the whole block.
        The call has gone out either way (the client already has its start and arguments); a
        mismatch (a model that broke its JSON after the head) is logged, never raised."""
        try:
            parsed = parse(block, tools)
            call = parsed[0] if isinstance(parsed, list) and len(parsed) == 1 else parsed
            same = call["name"] == self.name and call["arguments"] == json.loads(self.arguments)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            same = False
        if not same:
            log.warning("tool call %r: its streamed arguments are not what the whole block parses to", self.name)
        return same
