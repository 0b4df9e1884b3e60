"""A reply's text split into answer, thinking and tool calls, as the model's own markers say.

mlx-lm's `TextStateMachine` does the matching (on text, across token boundaries, markers
stripped). A call in the JSON format of Qwen and Hermes streams: its start (id, name) once its
head has parsed, then its arguments as they are written (`call_stream`). A call in any
other format is parsed by the tokenizer's own tool parser (one of mlx-lm's formats, inferred from
the chat template) when its block closes, and goes out whole. A block that does not parse (or,
streaming, whose head never parses) is given back as plain text, markers and all: a weak model's
broken call is an answer, never an error. A request that needs none of this (no tools, a model
that does not think) gets no parser.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mlx_lm.generate import TextStateMachine, make_text_state_machine

from mlx_fleet.protocol import ToolCallDelta
from mlx_fleet.worker.generation.call_stream import CallStream, is_json_tools


def initial_state(tokenizer: Any, prompt: list[int]) -> str:
    """"reasoning" when the prompt leaves a thinking block open (the template opened it)."""
    if tokenizer.has_thinking and tokenizer.rfind_think_start(prompt) > tokenizer.rfind_think_end(prompt):
        return "reasoning"
    return "normal"


class ReplyParser:
    __slots__ = ("_state", "_parse", "_tools", "_markers", "_tool_text", "_in_tool", "_streams", "_call",
                 "_calls", "made_call")

    def __init__(self, tokenizer: Any, start: str, tools: list[dict] | None) -> None:
        if tools:
            machine = make_text_state_machine(tokenizer)
        else:  # no tools offered: a call marker is just text
            transitions = {}
            if tokenizer.has_thinking:
                transitions = {"normal": [(tokenizer.think_start, "reasoning")],
                               "reasoning": [(tokenizer.think_end, "normal")]}
            machine = TextStateMachine(transitions)
        self._state = machine.make_state(start)
        self._parse = tokenizer.tool_parser
        self._tools = tools
        self._markers = (tokenizer.tool_call_start or "", tokenizer.tool_call_end or "")
        self._tool_text = ""
        self._in_tool = False
        self._streams = bool(tools) and is_json_tools(tokenizer)
        self._call: CallStream | None = None  # the call block being read, when its format streams
        self._calls = 0                       # calls made so far: the next one's index
        self.made_call = False

    @staticmethod
    def wanted(tokenizer: Any, tools: list[dict] | None) -> bool:
        return bool(tools) or tokenizer.has_thinking

    def feed(self, text: str, final: bool) -> tuple[str, str, tuple[ToolCallDelta, ...]]:
        """(answer text, thinking text, pieces of calls) from the next piece of the reply."""
        self._state, segments = TextStateMachine.split(self._state, text)
        if final:
            self._state, rest, current = TextStateMachine.flush(self._state)
            segments.append((current, rest))
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCallDelta] = []
        for state, piece in segments:
            if state == "tool":
                self._read_call(piece, calls)
                continue
            if self._in_tool:
                self._close_call(calls, content)
            (reasoning if state == "reasoning" else content).append(piece)
        if final and self._in_tool:  # the budget ran out inside a call
            self._close_call(calls, content, closed=False)
        return "".join(content), "".join(reasoning), _merged(calls)

    def _read_call(self, piece: str, calls: list[ToolCallDelta]) -> None:
        if not self._in_tool:
            self._in_tool = True
            self._call = CallStream() if self._streams else None
        self._tool_text += piece
        call = self._call
        if call is None:
            return
        was_started = call.started
        arguments = call.feed(piece)
        if not call.started:
            return
        if not was_started:
            calls.append(ToolCallDelta(self._calls, arguments, _new_id(), call.name))
            self.made_call = True
        elif arguments:
            calls.append(ToolCallDelta(self._calls, arguments))

    def _close_call(self, calls: list[ToolCallDelta], content: list[str], closed: bool = True) -> None:
        text, self._tool_text, self._in_tool = self._tool_text, "", False
        call, self._call = self._call, None
        if call is not None and call.started:
            call.check(text, self._parse, self._tools)
            calls.append(ToolCallDelta(self._calls, done=True))
            self._calls += 1
            return
        try:
            parsed = self._parse(text, self._tools)
            whole = []
            for item in parsed if isinstance(parsed, list) else [parsed]:
                arguments = item["arguments"]
                whole.append(ToolCallDelta(self._calls + len(whole), arguments if isinstance(arguments, str)
                                           else json.dumps(arguments, ensure_ascii=False),
                                           item.get("id") or _new_id(), str(item["name"]), True))
        except (ValueError, KeyError, TypeError, AttributeError):
            start, end = self._markers
            content.append(start + text + (end if closed else ""))
            return
        calls.extend(whole)
        self._calls += len(whole)
        self.made_call = True


def _new_id() -> str:
    return f"call_{os.urandom(12).hex()}"


def _merged(pieces: list[ToolCallDelta]) -> tuple[ToolCallDelta, ...]:
    """Consecutive pieces of one call as one (a token that both starts and ends a call)."""
    out: list[ToolCallDelta] = []
    for p in pieces:
        last = out[-1] if out else None
        if last is not None and last.index == p.index and not last.done:
            out[-1] = ToolCallDelta(p.index, last.arguments + p.arguments, last.id or p.id, last.name or p.name,
                                    p.done)
        else:
            out.append(p)
    return tuple(out)
