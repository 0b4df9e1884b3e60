"""Streamed chunks and events stay one line for every line splitter, whatever text a model produces;
each API's framer ends its stream its own way."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from mlx_fleet.protocol import Delta, Done, Failure, TokenLogprob, ToolCallDelta, Usage
from mlx_fleet.router.anthropic.events import MessageEvents
from mlx_fleet.router.openai.frames import CompletionFrames
from mlx_fleet.router.responses.events import ResponseEvents, ResponseShape
from mlx_fleet.router.responses.types import ResponsesRequest

# Line breaks for str.splitlines (and so for httpx's aiter_lines) that JSON does not escape.
AWKWARD = ["\x85", "\u2028", "\u2029", "a\u2028b\u2029c\x85d", "“quoted…” — fine", "tab\tnew\nline\rcr"]


def frames(chat: bool) -> CompletionFrames:
    return CompletionFrames(SimpleNamespace(id="chatcmpl-x", created=1, model="m\u2028odel"), chat)  # type: ignore[arg-type]


def lines_as_httpx_reads_them(body: bytes) -> list[str]:
    response = httpx.Response(200, content=body)
    return [line for line in response.iter_lines() if line]


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("text", AWKWARD)
def test_a_text_chunk_is_one_line_and_decodes_to_the_text(chat: bool, text: str) -> None:
    f = frames(chat)
    (line,) = lines_as_httpx_reads_them(f.text(text))
    assert line.startswith("data: ")
    chunk = json.loads(line[len("data: "):])
    choice = chunk["choices"][0]
    assert (choice["delta"]["content"] if chat else choice["text"]) == text
    assert chunk["model"] == "m\u2028odel"


def test_an_error_event_with_awkward_text_is_one_line() -> None:
    failure = Failure("worker_crashed", "boom\u2028and\x85more", 500)
    (line,) = lines_as_httpx_reads_them(CompletionFrames.error(failure))
    assert json.loads(line[len("data: "):])["error"]["message"] == "boom\u2028and\x85more"


def anthropic_frames() -> MessageEvents:
    return MessageEvents(SimpleNamespace(id="msg-x", created=1, model="m\u2028odel"))  # type: ignore[arg-type]


def responses_frames() -> ResponseEvents:
    ex = SimpleNamespace(id="resp-x", created=1, model="m\u2028odel")
    req = ResponsesRequest(model="m\u2028odel", input="hi", instructions="a\x85b")
    return ResponseEvents(ResponseShape(ex, req, 0.0, 1.0))  # type: ignore[arg-type]


def events(body: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of each SSE event, as a line-splitting client reads them."""
    lines = lines_as_httpx_reads_them(body)
    assert len(lines) % 2 == 0 and all(a.startswith("event: ") and b.startswith("data: ")
                                       for a, b in zip(lines[::2], lines[1::2]))
    return [(a[len("event: "):], json.loads(b[len("data: "):])) for a, b in zip(lines[::2], lines[1::2])]


@pytest.mark.parametrize("text", AWKWARD)
def test_anthropic_and_responses_deltas_are_one_line_each(text: str) -> None:
    f = anthropic_frames()
    start, (name, data) = events(f.text(text))  # the first text opens the text block
    assert start[1]["content_block"] == {"type": "text", "text": ""} and start[1]["index"] == 0
    assert name == data["type"] == "content_block_delta" and data["delta"] == {"type": "text_delta", "text": text}
    ((name, data),) = events(f.text(text))
    assert data["delta"]["text"] == text and data["index"] == 0
    f = responses_frames()
    opening = events(f.opening(None))
    added, part, (name, data) = events(f.text(text))  # the first text opens the message item
    assert [added[0], part[0]] == ["response.output_item.added", "response.content_part.added"]
    assert name == data["type"] == "response.output_text.delta" and data["delta"] == text
    assert data["sequence_number"] == len(opening) + 2 and data["item_id"] == added[1]["item"]["id"]
    ((name, data),) = events(f.text(text))
    assert data["delta"] == text and data["sequence_number"] == len(opening) + 3


def test_thinking_text_and_calls_become_blocks_and_items_in_order() -> None:
    """A call comes in pieces (its start, its arguments as written, its end), as the worker streams it."""
    end = Usage(5, 3)
    deltas = [Delta("", reasoning="hm\u2028m"), Delta("It is"),
              Delta("", tool_calls=(ToolCallDelta(0, '{"zone": ', "call_1", "get_time"),)),
              Delta("", tool_calls=(ToolCallDelta(0, '"utc"}'), ToolCallDelta(0, done=True)))]
    f = anthropic_frames()
    got = events(f.opening(None) + f.parts(deltas[:3]) + f.parts(deltas[3:]) + f.finish(Done("tool_calls", end)))
    starts = [d["content_block"] for n, d in got if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "text", "tool_use"]
    assert starts[2] == {"type": "tool_use", "id": "call_1", "name": "get_time", "input": {}}
    assert [d["index"] for n, d in got if n == "content_block_stop"] == [0, 1, 2]
    assert [d["delta"] for n, d in got if n == "content_block_delta"] == [
        {"type": "thinking_delta", "thinking": "hm\u2028m"}, {"type": "text_delta", "text": "It is"},
        {"type": "input_json_delta", "partial_json": '{"zone": '},
        {"type": "input_json_delta", "partial_json": '"utc"}'}]
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"
    f = responses_frames()
    got = events(f.opening(None) + f.parts(deltas[:3]) + f.parts(deltas[3:]) + f.finish(Done("tool_calls", end)))
    assert [d["sequence_number"] for _, d in got] == list(range(len(got)))
    final = got[-1][1]["response"]
    assert got[-1][0] == "response.completed"
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][2]["arguments"] == '{"zone": "utc"}' and final["output"][2]["call_id"] == "call_1"
    calls = [(n, d) for n, d in got if n.startswith("response.function_call_arguments")]
    assert [d.get("delta", d.get("arguments")) for _, d in calls] == ['{"zone": ', '"utc"}', '{"zone": "utc"}']
    assert calls[-1][0] == "response.function_call_arguments.done"


def test_answer_tokens_logprobs_go_out_with_the_text_they_made() -> None:
    """Responses: a thinking token's log probability is not the message's; an answer token whose
    text is held back (a stop string's possible start) goes out with the text that follows it."""
    think, held, said = (TokenLogprob(t, -v, (("x", -2.0),)) for t, v in (("hm", 0.5), ("St", 0.25), ("op", 0.125)))
    deltas = [Delta("", reasoning="hm", logprobs=(think,)), Delta("", logprobs=(held,)),
              Delta("Stop", logprobs=(said,))]
    f = responses_frames()
    got = events(f.opening(None) + f.parts(deltas[:2]) + f.parts(deltas[2:]) + f.finish(Done("stop", Usage(5, 3))))
    (delta,) = [d for n, d in got if n == "response.output_text.delta"]
    assert [t["token"] for t in delta["logprobs"]] == ["St", "op"] and delta["delta"] == "Stop"
    assert delta["logprobs"][0] == {"token": "St", "logprob": -0.25, "bytes": [83, 116],
                                    "top_logprobs": [{"token": "x", "logprob": -2.0, "bytes": [120]}]}
    (done,) = [d for n, d in got if n == "response.output_text.done"]
    assert done["logprobs"] == delta["logprobs"] == got[-1][1]["response"]["output"][1]["content"][0]["logprobs"]
    assert [d["sequence_number"] for _, d in got] == list(range(len(got)))


def test_every_framer_ends_a_stream_in_its_own_way() -> None:
    done = Done("stop", Usage(10, 2, 4), "\u2028")
    failure = Failure("worker_crashed", "boom\u2028and\x85more", 500)
    f = anthropic_frames()
    f.text("a")
    names = [n for n, _ in events(f.finish(done))]
    assert names == ["content_block_stop", "message_delta", "message_stop"]
    delta = events(anthropic_frames().finish(done))[-2][1]  # nothing said: still an (empty) text block
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "\u2028"}
    assert delta["usage"]["input_tokens"] == 6 and delta["usage"]["cache_read_input_tokens"] == 4
    ((name, data),) = events(MessageEvents.error(failure))
    assert name == "error" and data["error"] == {"type": "api_error", "message": "boom\u2028and\x85more"}
    f = responses_frames()
    seq = len(events(f.opening(None) + f.text("a") + f.text("b")))
    tail = events(f.finish(done))
    assert [n for n, _ in tail][-1] == "response.completed" and tail[0][1]["text"] == "ab"
    assert [d["sequence_number"] for _, d in tail] == list(range(seq, seq + 4))
    ((name, data),) = events(responses_frames().error(failure))
    assert name == "response.failed" and data["response"]["error"]["code"] == "server_error"
