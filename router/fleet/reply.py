"""A reply as the worker streams it (answer, thinking, tool calls, log probabilities; see
`protocol.Delta`), gathered whole for a response that is not streamed. Every API's framing reads
the same `GatheredReply` and `Delta`s."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlx_fleet.protocol import Delta, Done, TokenLogprob


@dataclass(slots=True)
class CallParts:
    """One tool call gathered from its pieces."""

    id: str
    name: str
    arguments: list[str]


@dataclass(slots=True)
class GatheredReply:
    texts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[CallParts] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    answer_logprobs: list[TokenLogprob] = field(default_factory=list)  # those of tokens not thinking or calls
    done: Done | None = None

    def add(self, delta: Delta) -> None:
        self.texts.append(delta.text)
        if delta.reasoning:
            self.reasoning.append(delta.reasoning)
        for piece in delta.tool_calls:
            if piece.index == len(self.tool_calls):
                self.tool_calls.append(CallParts(piece.id, piece.name, []))
            self.tool_calls[piece.index].arguments.append(piece.arguments)
        if delta.logprobs:
            self.logprobs.extend(delta.logprobs)
            if is_answer(delta):
                self.answer_logprobs.extend(delta.logprobs)

    @property
    def text(self) -> str:
        return "".join(self.texts)


def is_plain(delta: Delta) -> bool:
    return not (delta.reasoning or delta.tool_calls or delta.logprobs)


def is_answer(delta: Delta) -> bool:
    """Whether the tokens of `delta` belong to the answer's text (those whose text is still held
    back, at a possible stop string's start, included), not to thinking or a call."""
    return not (delta.reasoning or delta.tool_calls)
