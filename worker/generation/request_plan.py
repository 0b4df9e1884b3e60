"""What a generation request asks of a text engine beyond sampling: its prompt (through the chat
template, tools and all), how its reply is split (answer, thinking, tool calls), the grammar that
constrains it, and whether it wants log probabilities. Everything a client can get wrong here is
found before any compute is spent, and comes back as a 400 naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlx_fleet.protocol import ChatInput, Failure, Generate, TextInput, TokensInput
from mlx_fleet.worker.generation.call_stream import is_json_tools
from mlx_fleet.worker.generation.chat_prompt import TemplateRefused, offered_tools, render, template_tools
from mlx_fleet.worker.generation.constrain import GrammarError, GrammarProcessor, Grammars, response_format_grammar, tool_call_grammar
from mlx_fleet.worker.generation.reply_split import ReplyParser, initial_state


class Refused(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(slots=True)
class Plan:
    tokens: list[int]
    reply: ReplyParser | None = None
    grammar: GrammarProcessor | None = None


def prompt_text(tokenizer: Any, request: Generate) -> tuple[str | list[int], list[dict] | None]:
    """The prompt (text, or token ids as given) and the tools offered in it."""
    source = request.input
    if isinstance(source, TokensInput):
        return list(source.tokens), None
    if isinstance(source, TextInput):
        return source.prompt, None
    assert isinstance(source, ChatInput)
    tools = template_tools(offered_tools(source))
    if tools and not tokenizer.has_tool_calling:
        raise Refused(Failure("unsupported_parameter", "This model's chat template has no tool support.",
                              400, "tools"))
    try:
        return render(tokenizer, source, tools), tools
    except TemplateRefused as e:
        raise Refused(e.failure()) from None


def plan(tokenizer: Any, grammars: Grammars, request: Generate, tokens: list[int],
         tools: list[dict] | None) -> Plan:
    chat = isinstance(request.input, ChatInput)
    start = initial_state(tokenizer, tokens) if chat else "normal"
    reply = ReplyParser(tokenizer, start, tools) if chat and ReplyParser.wanted(tokenizer, tools) else None
    try:
        grammar, param = _grammar(tokenizer, request, tools)
        think_end = tokenizer.think_end_tokens[-1] if start == "reasoning" else None
        processor = grammars.processor(grammar, param, think_end) if grammar is not None else None
    except GrammarError as e:
        raise Refused(e.failure()) from None
    return Plan(tokens, reply, processor)


def _grammar(tokenizer: Any, request: Generate, tools: list[dict] | None) -> tuple[str | None, str]:
    source = request.input
    choice = source.tool_choice if isinstance(source, ChatInput) else None
    forced = tools and choice is not None and choice.mode in ("required", "function")
    fmt = request.response_format
    if forced:
        if fmt is not None and fmt.type != "text":
            raise GrammarError("response_format", "A response_format cannot be combined with a tool_choice that "
                                                  "forces a call.")
        if not is_json_tools(tokenizer):
            raise GrammarError("tool_choice", f"tool_choice '{choice.mode}' needs a model whose tool calls are "
                                              "JSON between <tool_call> markers; this model's are not.")
        as_tokens = len(tokenizer.tool_call_start_tokens) == 1 and len(tokenizer.tool_call_end_tokens) == 1
        return (tool_call_grammar(offered_tools(source), tokenizer.tool_call_start, tokenizer.tool_call_end, as_tokens),
                "tool_choice")
    if fmt is not None:
        return response_format_grammar(fmt), "response_format"
    return None, ""
