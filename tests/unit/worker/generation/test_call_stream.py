"""A tool call's arguments streamed as they are written (worker/generation/call_stream.py), read through the
reply parser with the real tokenizer of a Qwen-style tool model (mlx-lm's `json_tools` parser)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_fleet.protocol import ToolCallDelta
from tiny_models import QWEN_TOOL_TEMPLATE, TOOL_SPECIAL_TOKENS, build_tiny_lm
from mlx_fleet.worker.generation.call_stream import CallStream
from mlx_fleet.worker.generation.reply_split import ReplyParser

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from mlx_lm.utils import load_tokenizer

    path = build_tiny_lm(tmp_path_factory.mktemp("calls") / "tools", arch="qwen2", chat_template=QWEN_TOOL_TEMPLATE,
                         extra_special_tokens=TOOL_SPECIAL_TOKENS)
    return load_tokenizer(Path(path))


def _run(tokenizer, pieces: list[str]) -> tuple[str, list[ToolCallDelta], bool]:
    """Feed `pieces` one by one, as tokens would come; (content, call pieces, made_call)."""
    parser = ReplyParser(tokenizer, "normal", TOOLS)
    content, calls = [], []
    for i, piece in enumerate(pieces):
        text, _, got = parser.feed(piece, i == len(pieces) - 1)
        content.append(text)
        calls.extend(got)
    return "".join(content), calls, parser.made_call


def test_arguments_stream_piece_by_piece_and_equal_the_parsers_value(tokenizer) -> None:
    arguments = '{"city": "Pa\\"ris}", "tags": ["a", {"b": [1, 2]}], "n": -1.5e3}'
    block = '<tool_call>\n{"name": "get_weather", "arguments": ' + arguments + '}\n</tool_call>'
    content, calls, made = _run(tokenizer, ["Sure. "] + list(block) + [" done"])
    assert content == "Sure.  done" and made
    start, *middle, end = calls
    assert (start.index, start.name, start.id[:5]) == (0, "get_weather", "call_")
    assert start.arguments == "{"  # the head parsed on the arguments' first character
    assert len(middle) == len(arguments) - 1 and all(not p.name and not p.done for p in middle)
    assert end.done and not end.arguments
    streamed = "".join(p.arguments for p in calls)
    assert streamed == arguments
    assert json.loads(streamed) == tokenizer.tool_parser(block[len("<tool_call>"):-len("</tool_call>")])["arguments"]


def test_a_call_written_in_one_piece_is_one_whole_piece(tokenizer) -> None:
    content, calls, _ = _run(tokenizer, ['<tool_call>{"name": "get_weather", "arguments": {"a": 1}}</tool_call>', ""])
    assert content == ""
    assert [(c.index, c.name, c.arguments, c.done) for c in calls] == [(0, "get_weather", '{"a": 1}', True)]


def test_second_call_gets_the_next_index(tokenizer) -> None:
    one = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    _, calls, _ = _run(tokenizer, [one, "\n", one.replace('"f"', '"g"'), ""])
    assert [(c.index, c.name) for c in calls if c.name] == [(0, "f"), (1, "g")]


@pytest.mark.parametrize("block", [
    "<tool_call>I would like to call a tool</tool_call>",    # never a call
    '<tool_call>{"name": "get_weather", "argu</tool_call>',   # the head never completes
    "before <tool_call>not json</tool_call> after",            # with an answer around it
])
def test_a_block_whose_head_never_parses_is_plain_text_and_no_call(tokenizer, block: str) -> None:
    assert _run(tokenizer, list(block) + ["!"]) == (block + "!", [], False)


def test_a_call_in_another_key_order_is_read_whole_at_its_close(tokenizer) -> None:
    content, calls, made = _run(tokenizer, list('<tool_call>{"arguments": {}, "name": "f"}</tool_call>') + [""])
    assert made and content == ""
    assert [(c.index, c.name, c.arguments, c.done) for c in calls] == [(0, "f", "{}", True)]


def test_a_block_cut_by_the_budget_before_its_head_is_plain_text(tokenizer) -> None:
    content, calls, made = _run(tokenizer, list('<tool_call>{"name": "get_we'))
    assert (content, calls, made) == ('<tool_call>{"name": "get_we', [], False)


def test_a_call_cut_inside_its_arguments_still_ends(tokenizer) -> None:
    _, calls, made = _run(tokenizer, list('<tool_call>{"name": "f", "arguments": {"a": "x'))
    assert made and calls[-1].done and "".join(c.arguments for c in calls) == '{"a": "x'


def test_check_compares_with_the_parser(tokenizer) -> None:
    good, bad = CallStream(), CallStream()
    good.feed('{"name": "f", "arguments": {"a": 1}}')
    bad.feed('{"name": "f", "arguments": {"a": 1}, "arguments": {"a": 2}}')
    assert good.check('{"name": "f", "arguments": {"a": 1}}', tokenizer.tool_parser, TOOLS)
    assert not bad.check('{"name": "f", "arguments": {"a": 1}, "arguments": {"a": 2}}', tokenizer.tool_parser, TOOLS)
