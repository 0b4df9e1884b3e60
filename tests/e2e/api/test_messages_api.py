"""Anthropic's Messages API through the real stack, judged by the official `anthropic` client in
strict mode, with the chat route as the oracle (the same conversation gives the same greedy text
and the same prompt length)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import json

import anthropic
import httpx
import jsonschema
import openai
import pytest
from PIL import Image

from fleet_server import FleetServer, strict_client
from tiny_models import (
    QWEN_THINKING_TEMPLATE,
    QWEN_TOOL_TEMPLATE,
    TOOL_SPECIAL_TOKENS,
    build_tiny_lm,
    build_tiny_qwen2_vl,
    end_answers_at,
)

QUESTION = "Tell me about the weather today."
WEATHER_QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
# Bounded values: a random model would otherwise write one string until max_tokens.
WEATHER = {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
           "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}}}
CLOCK = {"type": "object", "additionalProperties": False, "required": ["zone"],
         "properties": {"zone": {"enum": ["utc", "cet"]}}}
TOOLS = [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER,
          "cache_control": {"type": "ephemeral"}},
         {"name": "get_time", "description": "Time now", "input_schema": CLOCK}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[FleetServer]:
    root = tmp_path_factory.mktemp("messages")
    vlm = build_tiny_qwen2_vl(root / "vlm")
    stops = end_answers_at(build_tiny_lm(root / "stops", arch="llama"), "\n")  # ends its answers on its own
    tools = build_tiny_lm(root / "tools", arch="qwen2", chat_template=QWEN_TOOL_TEMPLATE,
                          extra_special_tokens=TOOL_SPECIAL_TOKENS)
    thinker = build_tiny_lm(root / "thinker", arch="qwen2", seed=2, chat_template=QWEN_THINKING_TEMPLATE,
                            extra_special_tokens=TOOL_SPECIAL_TOKENS)
    models = {"tiny": tiny_lm, "vlm": vlm, "tiny-stops": stops, "tools": tools, "thinker": thinker}
    config = root / "fleet.toml"
    config.write_text("".join(f'[[models]]\nid = "{i}"\npath = "{p}"\n' for i, p in models.items()))
    server = FleetServer(config, root / "state").wait_ready()
    yield server
    server.stop()


@pytest.fixture
def claude(fleet: FleetServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fleet.base_url, api_key="none", max_retries=0, timeout=60,
                               _strict_response_validation=True)


@pytest.fixture
def oai(fleet: FleetServer) -> openai.OpenAI:
    return strict_client(fleet.base_url)


def png_base64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), color=(200, 30, 90)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def chat(oai: openai.OpenAI, messages: list[dict], max_tokens: int, model: str = "tiny"):
    return oai.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)


def test_system_and_text_answer_as_chat_does(claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    system = "You are a weather reporter."
    expected = chat(oai, [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}], 12)
    m = claude.messages.create(model="tiny", max_tokens=12, system=system,
                               messages=[{"role": "user", "content": QUESTION}])
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == expected.choices[0].message.content
    assert m.role == "assistant" and m.type == "message" and m.model == "tiny"
    assert m.stop_reason == "max_tokens" and m.stop_sequence is None
    assert m.usage.output_tokens == 12
    assert m.usage.input_tokens + m.usage.cache_read_input_tokens == expected.usage.prompt_tokens


def test_a_request_shaped_like_claude_codes_is_served(fleet: FleetServer, oai: openai.OpenAI) -> None:
    """Fields it does not use, blocks with cache_control, an earlier turn's thinking: all tolerated."""
    system = [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "Be brief."}]
    body = {
        "model": "tiny", "max_tokens": 10, "stream": False, "system": system,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi."}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "Greet back.", "signature": "s"},
                                              {"type": "text", "text": "Hello!"}]},
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ok</system-reminder>"},
                                         {"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral"}}]},
        ],
        "metadata": {"user_id": "user_abc_account_123_session_456"},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "temperature": 0,
        "context_management": {"edits": []}, "output_config": {"effort": "high"},
    }
    headers = {"x-api-key": "anything", "anthropic-version": "2023-06-01",
               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14", "x-app": "cli"}
    r = httpx.post(f"{fleet.base_url}/v1/messages?beta=true", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    message = anthropic.types.Message.model_validate(r.json())
    expected = chat(oai, [{"role": "system", "content": "You are Claude Code.\nBe brief."},
                          {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
                          {"role": "user", "content": f"<system-reminder>ok</system-reminder>\n{QUESTION}"}], 10)
    assert message.content[0].text == expected.choices[0].message.content
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens == expected.usage.prompt_tokens
    # Its main loop offers tools (with cache_control) and streams, on a model whose template takes them.
    body = {**body, "model": "tools", "stream": True, "tools": TOOLS, "tool_choice": {"type": "auto"}}
    with httpx.stream("POST", f"{fleet.base_url}/v1/messages?beta=true", json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        names = [line[len("event: "):] for line in r.iter_lines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]


def test_image_blocks_reach_the_vision_model(claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    data = png_base64()
    expected = chat(oai, [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "text", "text": "What is this?"}]}], 8, model="vlm")
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
               {"type": "text", "text": "What is this?"}]
    m = claude.messages.create(model="vlm", max_tokens=8, messages=[{"role": "user", "content": content}])
    assert m.content[0].text == expected.choices[0].message.content
    assert m.usage.input_tokens == expected.usage.prompt_tokens
    assert claude.messages.count_tokens(model="vlm", messages=[{"role": "user", "content": content}]
                                        ).input_tokens == expected.usage.prompt_tokens
    with pytest.raises(anthropic.BadRequestError) as e:  # counting refuses what generating would
        claude.messages.count_tokens(model="vlm", tools=TOOLS, messages=[{"role": "user", "content": content}])
    assert "Tool calling is not supported" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:  # the router's image policy: text models take none
        claude.messages.create(model="tiny", max_tokens=8, messages=[{"role": "user", "content": content}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "does not accept image input" in e.value.body["error"]["message"]


def test_streamed_events_come_in_order(claude: anthropic.Anthropic) -> None:
    kwargs = {"model": "tiny", "max_tokens": 16, "messages": [{"role": "user", "content": QUESTION}]}
    whole = claude.messages.create(**kwargs)
    events = list(claude.messages.create(**kwargs, stream=True))
    types = [e.type for e in events]
    n = types.count("content_block_delta")
    assert types == ["message_start", "content_block_start", *["content_block_delta"] * n, "content_block_stop",
                     "message_delta", "message_stop"]
    assert events[0].message.id.startswith("msg_") and events[0].message.content == []
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == whole.content[0].text
    assert events[-2].delta.stop_reason == "max_tokens" and events[-2].usage.output_tokens == 16
    with claude.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == whole.content[0].text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 16
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == \
        whole.usage.input_tokens + whole.usage.cache_read_input_tokens


def test_message_start_reports_the_prompt_tokens(claude: anthropic.Anthropic) -> None:
    """Claude Code reads the prompt's size from `message_start`: it is the real count from the
    first event on, the same as count_tokens' and as `message_delta`'s, and a prompt the worker
    found in its prompt cache says so there too."""
    long = " ".join([QUESTION] * 12)  # long enough for the next request to start from the cache
    kwargs = {"model": "tiny", "max_tokens": 4, "system": "Be brief.", "messages": [{"role": "user", "content": long}]}
    counted = claude.messages.count_tokens(model="tiny", system="Be brief.", messages=kwargs["messages"]).input_tokens
    for _ in range(2):  # the second time, most of the prompt comes from the prompt cache
        events = list(claude.messages.create(**kwargs, stream=True))
        start, delta = events[0], events[-2]
        assert start.type == "message_start" and delta.type == "message_delta"
        first = start.message.usage
        assert first.input_tokens + first.cache_read_input_tokens == counted
        assert (first.input_tokens, first.cache_read_input_tokens) == \
            (delta.usage.input_tokens, delta.usage.cache_read_input_tokens)
    assert first.cache_read_input_tokens > 0


def test_an_answer_that_ends_on_its_own_is_an_end_turn(claude: anthropic.Anthropic) -> None:
    kwargs = {"model": "tiny-stops", "max_tokens": 16, "messages": [{"role": "user", "content": QUESTION}]}
    m = claude.messages.create(**kwargs)
    assert (m.stop_reason, m.stop_sequence) == ("end_turn", None) and m.usage.output_tokens < 16
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == m.usage.output_tokens
    assert final.content[0].text == m.content[0].text


def test_stop_sequences_end_the_message_and_are_reported(claude: anthropic.Anthropic) -> None:
    kwargs = {"model": "tiny", "max_tokens": 24, "messages": [{"role": "user", "content": QUESTION}]}
    text = claude.messages.create(**kwargs).content[0].text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = text[: text.find(stop)]
    m = claude.messages.create(**kwargs, stop_sequences=["zzzz", stop])
    assert (m.content[0].text, m.stop_reason, m.stop_sequence) == (cut, "stop_sequence", stop)
    with claude.messages.stream(**kwargs, stop_sequences=[stop]) as stream:
        final = stream.get_final_message()
    assert (final.content[0].text, final.stop_reason, final.stop_sequence) == (cut, "stop_sequence", stop)


def test_max_tokens_beyond_the_context_is_a_ceiling(claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    """Claude Code asks for 32k tokens or more whatever the model: that is shortened to fit."""
    m = claude.messages.create(model="tiny", max_tokens=100_000, stop_sequences=["\n\n"],
                               messages=[{"role": "user", "content": QUESTION}])
    assert m.stop_reason == "stop_sequence" and m.usage.output_tokens == 2
    with pytest.raises(openai.BadRequestError) as e:  # where the limit is a demand (chat), it is refused
        chat(oai, [{"role": "user", "content": QUESTION}], 100_000)
    assert e.value.body["code"] == "context_length_exceeded"


def test_count_tokens_is_the_prompt_a_generation_sees(claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": QUESTION}]
    counted = claude.messages.count_tokens(model="tiny", system="Be brief.", messages=messages).input_tokens
    expected = chat(oai, [{"role": "system", "content": "Be brief."}, *messages], 1).usage.prompt_tokens
    assert counted == expected
    assert claude.messages.count_tokens(model="tiny", messages=messages).input_tokens < counted


@pytest.mark.parametrize("change,status,kind", [
    ({"model": "nope"}, 404, "not_found_error"),
    ({"max_tokens": None}, 400, "invalid_request_error"),
    ({"max_tokens": 2**64}, 400, "invalid_request_error"),  # more than the wire's integers hold: not a 500
    ({"tools": [{"name": "f", "input_schema": {"type": "object"}}]}, 400, "invalid_request_error"),
    ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, 400, "invalid_request_error"),
    ({"tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "g"}},
     400, "invalid_request_error"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {"$ref": "#/definitions/missing"}}}}, 400,
     "invalid_request_error"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, 400, "invalid_request_error"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "{"}]}, 400,
     "invalid_request_error"),
])
def test_errors_are_in_anthropics_shape(fleet: FleetServer, change: dict, status: int, kind: str) -> None:
    body = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": QUESTION}], **change}
    body = {k: v for k, v in body.items() if v is not None}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        r = httpx.post(f"{fleet.base_url}{path}", json=body, timeout=30)
        if path.endswith("count_tokens") and ("max_tokens" in change or "output_config" in change):
            assert r.status_code == 200  # count_tokens takes no max_tokens, and generates nothing to constrain
            continue
        assert r.status_code == status, (path, r.text)
        payload = r.json()
        assert payload["type"] == "error" and payload["error"]["type"] == kind and payload["error"]["message"]


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_time"}])
def test_a_forced_tool_use_is_valid_against_its_schema(claude: anthropic.Anthropic, choice: dict) -> None:
    m = claude.messages.create(model="tools", max_tokens=120, tools=TOOLS, tool_choice=choice,
                               messages=[WEATHER_QUESTION])
    (use,) = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and use.id
    if choice["type"] == "tool":
        assert use.name == "get_time"
    jsonschema.validate(use.input, {"get_weather": WEATHER, "get_time": CLOCK}[use.name])
    assert all("<tool_call>" not in b.text for b in m.content if b.type == "text")


def test_a_streamed_tool_use_comes_as_input_json_deltas(claude: anthropic.Anthropic) -> None:
    kwargs = {"model": "tools", "max_tokens": 120, "tools": TOOLS, "messages": [WEATHER_QUESTION],
              "tool_choice": {"type": "tool", "name": "get_weather"}}
    events = list(claude.messages.create(**kwargs, stream=True))
    starts = [e for e in events if e.type == "content_block_start"]
    assert starts[-1].content_block.type == "tool_use" and starts[-1].content_block.name == "get_weather"
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    jsonschema.validate(json.loads(partial), WEATHER)
    assert events[-2].delta.stop_reason == "tool_use"
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()  # the SDK's accumulator parses the input back
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert use.input == json.loads(partial) and final.stop_reason == "tool_use"


def test_a_tool_result_round_trip_is_the_same_conversation_as_in_chat(claude: anthropic.Anthropic,
                                                                     oai: openai.OpenAI) -> None:
    arguments = {"city": "Paris", "unit": "c"}
    messages = [WEATHER_QUESTION,
                {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                                                  {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                   "input": arguments}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": [{"type": "text", "text": '{"temperature": 21}'}]}]}]
    m = claude.messages.create(model="tools", max_tokens=4, tools=TOOLS, messages=messages)
    chat_tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                    "parameters": t["input_schema"]}} for t in TOOLS]
    expected = oai.chat.completions.create(model="tools", tools=chat_tools, max_tokens=4, temperature=0, messages=[
        WEATHER_QUESTION, {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(arguments)}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": '{"temperature": 21}'}])
    assert m.usage.input_tokens + m.usage.cache_read_input_tokens == expected.usage.prompt_tokens
    assert m.content[0].text == (expected.choices[0].message.content or "")
    assert claude.messages.count_tokens(model="tools", tools=TOOLS, messages=messages).input_tokens == \
        expected.usage.prompt_tokens


def test_output_config_format_is_enforced(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model="tools", max_tokens=80, messages=[WEATHER_QUESTION],
                               output_config={"format": {"type": "json_schema", "schema": WEATHER}})
    assert m.stop_reason == "end_turn"
    jsonschema.validate(json.loads(m.content[0].text), WEATHER)


def test_reasoning_comes_as_a_thinking_block(claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    expected = oai.chat.completions.create(model="thinker", messages=[WEATHER_QUESTION], max_tokens=12,
                                           temperature=0).choices[0].message
    kwargs = {"model": "thinker", "max_tokens": 12, "messages": [WEATHER_QUESTION]}
    m = claude.messages.create(**kwargs)
    assert m.content[0].type == "thinking" and m.content[0].thinking == expected.reasoning_content
    assert [b.type for b in m.content][1:] == ["text"] and m.content[1].text == (expected.content or "")
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == expected.reasoning_content
