"""A gathered reply's parts in OpenAI's shapes: chat's assistant message, log probabilities
(chat's, text completions', and the token list Responses shares), and tool calls as chat's
stream deltas."""

from __future__ import annotations

from mlx_fleet.protocol import TokenLogprob, ToolCallDelta
from mlx_fleet.router.fleet.reply import GatheredReply
from mlx_fleet.router.openai import types as oa


def chat_message(reply: GatheredReply) -> oa.AssistantMessage:
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
