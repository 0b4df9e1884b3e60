"""A reply as the worker streams it (answer, thinking, tool calls, log probabilities; see
`protocol.Delta`) gathered for a whole response, and those parts in OpenAI's chat and text
completion shapes. Another API's framing reads the same `Reply` and `Delta`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlx_fleet.protocol import Delta, Done, TokenLogprob, ToolCallDelta
from mlx_fleet.router import openai_types as oa


@dataclass(slots=True)
class CallParts:
    """One tool call gathered from its pieces."""

    id: str
    name: str
    arguments: list[str]


@dataclass(slots=True)
class Reply:
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


def chat_message(reply: Reply) -> oa.AssistantMessage:
    text = reply.text
    calls = [oa.ToolCall(id=c.id, type="function",
                         function=oa.FunctionCall(name=c.name, arguments="".join(c.arguments)))
             for c in reply.tool_calls]
    return oa.AssistantMessage(role="assistant", content=text if text or not calls else None,
                               reasoning_content="".join(reply.reasoning) or None, tool_calls=calls or None)


def token_logprobs(items: list[TokenLogprob]) -> list[oa.TokenLogprobOut]:
    """Tokens' log probabilities in OpenAI's shape, which chat's `logprobs.content` and Responses'
    `output_text` parts (and their delta events) share."""
    return [oa.TokenLogprobOut(token=t.token, logprob=t.logprob, bytes=list(t.token.encode()),
                               top_logprobs=[oa.TopLogprob(token=a, logprob=v, bytes=list(a.encode()))
                                             for a, v in t.top])
            for t in items]


def chat_logprobs(items: list[TokenLogprob]) -> oa.ChatLogprobs:
    return oa.ChatLogprobs(content=token_logprobs(items))


def completion_logprobs(items: list[TokenLogprob], offset: int, top: bool) -> oa.CompletionLogprobs:
    offsets = []
    for t in items:
        offsets.append(offset)
        offset += len(t.token)
    return oa.CompletionLogprobs(tokens=[t.token for t in items], token_logprobs=[t.logprob for t in items],
                                 top_logprobs=[dict(t.top) for t in items] if top else None, text_offset=offsets)


def stream_tool_calls(pieces: list[ToolCallDelta]) -> list[dict]:
    """Pieces of calls as OpenAI's `delta.tool_calls`: a call's first item has its index, id, type
    and name (and the first of its arguments), the next ones its index and more arguments. The
    pieces of one call that arrived together are one item; a piece that only ends a call is none
    (OpenAI's stream has no such event)."""
    items: list[dict] = []
    for p in pieces:
        last = items[-1] if items else None
        if last is not None and last["index"] == p.index:
            last["function"]["arguments"] += p.arguments
        elif p.name:
            items.append({"index": p.index, "id": p.id, "type": "function",
                          "function": {"name": p.name, "arguments": p.arguments}})
        elif p.arguments:
            items.append({"index": p.index, "function": {"arguments": p.arguments}})
    return items
