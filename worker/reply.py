"""A reply's text split into answer, thinking and tool calls, as the model's own markers say.

mlx-lm's `TextStateMachine` does the matching (on text, across token boundaries, markers
stripped); calls are parsed by the tokenizer's own tool parser (one of mlx-lm's formats, inferred
from the chat template) when their block closes, and go out whole. A block that does not parse
is given back as plain text, markers and all: a weak model's broken call is an answer, never an
error. A request that needs none of this (no tools, a model that does not think) gets no parser.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import mlx.core as mx
from mlx_lm.generate import TextStateMachine, make_text_state_machine

from mlx_fleet.protocol import TokenLogprob, ToolCall


# What OpenAI reports for a token that cannot be chosen (JSON has no -Infinity): here, a token a
# grammar masked out, among the alternatives.
IMPOSSIBLE = -9999.0


def token_logprob(decode: Callable[[list[int]], str], token: int, logprobs: mx.array, top: int) -> TokenLogprob:
    """A sampled token's log probability and the `top` most likely tokens at its position."""
    alternatives = ()
    if top:
        ids = mx.argpartition(-logprobs, kth=top - 1)[:top]
        pairs = zip(ids.tolist(), logprobs[ids].tolist())
        alternatives = tuple(sorted(((decode([i]), max(v, IMPOSSIBLE)) for i, v in pairs), key=lambda p: -p[1]))
    return TokenLogprob(decode([token]), max(logprobs[token].item(), IMPOSSIBLE), alternatives)


def initial_state(tokenizer: Any, prompt: list[int]) -> str:
    """"reasoning" when the prompt leaves a thinking block open (the template opened it)."""
    if tokenizer.has_thinking and tokenizer.rfind_think_start(prompt) > tokenizer.rfind_think_end(prompt):
        return "reasoning"
    return "normal"


class ReplyParser:
    __slots__ = ("_state", "_parse", "_tools", "_markers", "_tool_text", "_in_tool", "made_call")

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
        self.made_call = False

    @staticmethod
    def wanted(tokenizer: Any, tools: list[dict] | None) -> bool:
        return bool(tools) or tokenizer.has_thinking

    def feed(self, text: str, final: bool) -> tuple[str, str, tuple[ToolCall, ...]]:
        """(answer text, thinking text, completed calls) from the next piece of the reply."""
        self._state, segments = TextStateMachine.split(self._state, text)
        if final:
            self._state, rest, current = TextStateMachine.flush(self._state)
            segments.append((current, rest))
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        for state, piece in segments:
            if state == "tool":
                self._in_tool = True
                self._tool_text += piece
                continue
            if self._in_tool:
                self._close_call(calls, content)
            (reasoning if state == "reasoning" else content).append(piece)
        if final and self._in_tool:  # the budget ran out inside a call
            self._close_call(calls, content, closed=False)
        return "".join(content), "".join(reasoning), tuple(calls)

    def _close_call(self, calls: list[ToolCall], content: list[str], closed: bool = True) -> None:
        text, self._tool_text, self._in_tool = self._tool_text, "", False
        try:
            parsed = self._parse(text, self._tools)
            for call in parsed if isinstance(parsed, list) else [parsed]:
                arguments = call["arguments"]
                calls.append(ToolCall(call.get("id") or f"call_{os.urandom(12).hex()}", str(call["name"]),
                                      arguments if isinstance(arguments, str) else json.dumps(arguments,
                                                                                              ensure_ascii=False)))
            self.made_call = True
        except (ValueError, KeyError, TypeError, AttributeError):
            start, end = self._markers
            content.append(start + text + (end if closed else ""))
