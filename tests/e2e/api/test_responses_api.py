"""OpenAI's Responses API through the real stack, judged by the official client in strict mode.

The route is a translator onto the chat route's internals, so its oracle is the chat route: the
same conversation must give the same greedy text and the same token counts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from fleet_server import FleetServer, write_config
from tiny_models import QWEN_THINKING_TEMPLATE, QWEN_TOOL_TEMPLATE, TOOL_SPECIAL_TOKENS, build_tiny_lm, end_answers_at

QUESTION = "Tell me about the weather today."
# Bounded values: a random model would otherwise write one string until max_output_tokens.
WEATHER = {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
           "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}}}
CLOCK = {"type": "object", "additionalProperties": False, "required": ["zone"],
         "properties": {"zone": {"enum": ["utc", "cet"]}}}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather now", "parameters": WEATHER},
         {"type": "function", "name": "get_time", "description": "Time now", "parameters": CLOCK}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[FleetServer]:
    """The tiny model, one that ends its answers on its own ("tiny-stops"), one whose chat template
    takes tools (Qwen's, with its <tool_call> markers) and one whose template thinks first."""
    root = tmp_path_factory.mktemp("responses")
    stops = end_answers_at(build_tiny_lm(root / "stops", arch="llama"), "\n")
    tools = build_tiny_lm(root / "tools", arch="qwen2", chat_template=QWEN_TOOL_TEMPLATE,
                          extra_special_tokens=TOOL_SPECIAL_TOKENS)
    thinker = build_tiny_lm(root / "thinker", arch="qwen2", seed=2, chat_template=QWEN_THINKING_TEMPLATE,
                            extra_special_tokens=TOOL_SPECIAL_TOKENS)
    models = {"tiny": tiny_lm, "tiny-stops": stops, "tools": tools, "thinker": thinker}
    server = FleetServer(write_config(root / "fleet.toml", models), root / "state").wait_ready()
    yield server
    server.stop()


def chat(client: openai.OpenAI, messages: list[dict], max_tokens: int) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, temperature=0)


def test_plain_input_answers_as_chat_does(client: openai.OpenAI) -> None:
    expected = chat(client, [{"role": "user", "content": QUESTION}], 12)
    r = client.responses.create(model="tiny", input=QUESTION, max_output_tokens=12, temperature=0)
    assert r.output_text == expected.choices[0].message.content
    assert r.object == "response" and r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.input_tokens == expected.usage.prompt_tokens
    assert r.usage.output_tokens == 12 and r.usage.total_tokens == r.usage.input_tokens + 12


def test_instructions_are_the_system_message(client: openai.OpenAI) -> None:
    instructions = "You are a pirate. Answer like one."
    expected = chat(client, [{"role": "system", "content": instructions}, {"role": "user", "content": QUESTION}], 10)
    r = client.responses.create(model="tiny", instructions=instructions, input=QUESTION, max_output_tokens=10,
                                temperature=0)
    assert r.output_text == expected.choices[0].message.content
    assert r.instructions == instructions
    assert r.usage.input_tokens == expected.usage.prompt_tokens


def test_item_input_with_history_is_the_same_conversation(client: openai.OpenAI) -> None:
    items = [
        {"role": "developer", "content": "Be kind."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi there."}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Hello! How can I help?", "annotations": []}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},  # an earlier turn's reasoning: not in the prompt
        {"role": "user", "content": QUESTION},
    ]
    expected = chat(client, [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi there."},
                             {"role": "assistant", "content": "Hello! How can I help?"},
                             {"role": "user", "content": QUESTION}], 10)
    r = client.responses.create(model="tiny", input=items, max_output_tokens=10, temperature=0, store=False,
                                metadata={"who": "test"}, prompt_cache_key="k", include=["reasoning.encrypted_content"])
    assert r.output_text == expected.choices[0].message.content
    assert r.usage.input_tokens == expected.usage.prompt_tokens


def test_streamed_events_come_in_order(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="tiny", input=QUESTION, max_output_tokens=16, temperature=0)
    events = list(client.responses.create(model="tiny", input=QUESTION, max_output_tokens=16, temperature=0,
                                          stream=True))
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    item_id = events[2].item.id
    assert {e.item_id for e in deltas} == {item_id} == {events[-2].item.id}
    text = "".join(e.delta for e in deltas)
    assert text == whole.output_text == events[-4].text == events[-2].item.content[0].text
    final = events[-1].response
    assert final.id == events[0].response.id and final.status == "incomplete"
    assert final.id.startswith("resp_")  # OpenAI's own id shape
    assert final.output_text == text and final.usage.output_tokens == 16
    assert final.usage.input_tokens == whole.usage.input_tokens


def scored(logprobs) -> list[tuple]:
    """Tokens' log probabilities, with their alternatives, whichever API's types hold them."""
    return [(t.token, round(t.logprob, 4), [(a.token, round(a.logprob, 4)) for a in t.top_logprobs or []])
            for t in logprobs]


def test_logprobs_are_the_chat_routes(client: openai.OpenAI) -> None:
    """Asked for as OpenAI does (`include`, `top_logprobs`), in the output_text part and on each
    text delta event, equal to the chat route's for the same conversation."""
    messages = [{"role": "user", "content": QUESTION}]
    expected = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                              logprobs=True, top_logprobs=3).choices[0].logprobs.content
    wanted = scored(expected)
    assert len(wanted) == 10 and all(len(alternatives) == 3 for _, _, alternatives in wanted)
    kwargs = {"model": "tiny", "input": QUESTION, "max_output_tokens": 10, "temperature": 0}
    r = client.responses.create(**kwargs, include=["message.output_text.logprobs"], top_logprobs=3)
    assert scored(r.output[0].content[0].logprobs) == wanted
    events = list(client.responses.create(**kwargs, include=["message.output_text.logprobs"], top_logprobs=3,
                                          stream=True))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(e.delta for e in deltas) == r.output_text
    assert scored([t for e in deltas for t in e.logprobs]) == wanted
    done = next(e for e in events if e.type == "response.output_text.done")
    assert scored(done.logprobs) == scored(events[-1].response.output[0].content[0].logprobs) == wanted
    # `include` alone: each token's own log probability; `top_logprobs` alone asks for them too
    alone = client.responses.create(**kwargs, include=["message.output_text.logprobs"])
    assert scored(alone.output[0].content[0].logprobs) == [(t, v, []) for t, v, _ in wanted]
    assert scored(client.responses.create(**kwargs, top_logprobs=3).output[0].content[0].logprobs) == wanted
    assert client.responses.create(**kwargs).output[0].content[0].logprobs == []


@pytest.mark.parametrize("extra,param", [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "parameters": {"type": "object"}}]}, "tools[0].name"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"tools": TOOLS}, "tools"),  # a model whose chat template takes no tools
    ({"text": {"format": {"type": "json_schema", "name": "x",
                          "schema": {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}}}},
     "response_format"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"background": True}, "background"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]},
     "input[0].content[0].image_url"),
    ({"frobnicate": 1}, None),
])
def test_what_cannot_be_honoured_is_a_400(fleet: FleetServer, extra: dict, param: str | None) -> None:
    body = {"model": "tiny", "input": QUESTION, "max_output_tokens": 4, **extra}
    r = httpx.post(f"{fleet.base_url}/v1/responses", json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_an_answer_that_ends_on_its_own_is_completed(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="tiny-stops", input=QUESTION, max_output_tokens=16)
    assert whole.status == "completed" and whole.incomplete_details is None and whole.output[0].status == "completed"
    assert whole.usage.output_tokens < 16
    events = list(client.responses.create(model="tiny-stops", input=QUESTION, max_output_tokens=16, stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.status == "completed"
    assert events[-2].item.status == "completed"
    with client.responses.stream(model="tiny-stops", input=QUESTION, max_output_tokens=16) as stream:
        final = stream.get_final_response()  # the SDK's helper accumulates the events into a Response
    assert final.output_text == whole.output_text and final.usage.output_tokens == whole.usage.output_tokens


def test_the_agents_sdk_runs_an_agent(fleet: FleetServer) -> None:
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # nothing may leave the machine
    client = openai.AsyncOpenAI(base_url=f"{fleet.base_url}/v1", api_key="none", max_retries=0,
                                _strict_response_validation=True)
    agent = Agent(name="reporter", instructions="You report the weather.",
                  model=OpenAIResponsesModel(model="tiny-stops", openai_client=client),
                  model_settings=ModelSettings(max_tokens=16, temperature=0))

    async def run() -> tuple:
        whole = await Runner.run(agent, QUESTION)
        streamed = Runner.run_streamed(agent, QUESTION)
        kinds = [event.data.type async for event in streamed.stream_events() if event.type == "raw_response_event"]
        return whole, streamed, kinds

    whole, streamed, kinds = asyncio.run(run())
    (response,) = whole.raw_responses
    assert response.output[0].type == "message" and response.usage.output_tokens < 16
    assert whole.final_output == streamed.final_output == response.output[0].content[0].text
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_time"}])
def test_a_forced_function_call_is_valid_against_its_schema(client: openai.OpenAI, choice) -> None:
    r = client.responses.create(model="tools", input="What is the weather in Paris?", tools=TOOLS, tool_choice=choice,
                                max_output_tokens=120, temperature=0)
    (call,) = [item for item in r.output if item.type == "function_call"]
    assert r.status == "completed" and call.status == "completed" and call.call_id
    if isinstance(choice, dict):
        assert call.name == "get_time"
    jsonschema.validate(json.loads(call.arguments), {"get_weather": WEATHER, "get_time": CLOCK}[call.name])
    assert "<tool_call>" not in r.output_text


def test_a_streamed_function_call_comes_as_its_items_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="tools", input="What is the weather in Paris?", tools=TOOLS,
                                          tool_choice={"type": "function", "name": "get_weather"},
                                          max_output_tokens=120, temperature=0, stream=True))
    types = [e.type for e in events]
    start = types.index("response.output_item.added")
    n = types.count("response.function_call_arguments.delta")  # the arguments, as the model writes them
    assert types[start:] == ["response.output_item.added", *["response.function_call_arguments.delta"] * n,
                             "response.function_call_arguments.done", "response.output_item.done",
                             "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added, *deltas, done, item_done, completed = events[start:]
    assert added.item.type == "function_call" and added.item.arguments == "" and added.item.name == "get_weather"
    assert {d.item_id for d in deltas} == {done.item_id} == {added.item.id} == {item_done.item.id}
    arguments = "".join(d.delta for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert done.arguments == arguments == item_done.item.arguments == completed.response.output[-1].arguments


def test_text_format_json_schema_is_enforced(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "name": "weather", "schema": WEATHER, "strict": True}
    r = client.responses.create(model="tools", input="What is the weather in Paris?", text={"format": fmt},
                                max_output_tokens=80, temperature=0)
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), WEATHER)
    assert r.text.format.type == "json_schema"


def test_a_function_call_and_its_output_are_the_same_conversation_as_in_chat(client: openai.OpenAI) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    arguments = '{"city": "Paris", "unit": "c"}'
    items = [question, {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": arguments},
             {"type": "function_call_output", "call_id": "call_1", "output": '{"temperature": 21}'}]
    r = client.responses.create(model="tools", input=items, tools=TOOLS, max_output_tokens=4, temperature=0)
    chat_tools = [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in TOOLS]
    expected = client.chat.completions.create(model="tools", tools=chat_tools, max_tokens=4, temperature=0, messages=[
        question, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}])
    assert r.usage.input_tokens == expected.usage.prompt_tokens
    assert r.output_text == (expected.choices[0].message.content or "")


def test_the_agents_sdk_runs_an_agent_with_a_function_tool(fleet: FleetServer) -> None:
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    calls: list[dict] = []

    @function_tool
    def get_time(zone: str) -> str:
        """The time now in a zone ("utc" or "cet")."""
        calls.append({"zone": zone})
        return f"12:00 {zone}"

    client = openai.AsyncOpenAI(base_url=f"{fleet.base_url}/v1", api_key="none", max_retries=0,
                                _strict_response_validation=True)
    agent = Agent(name="clock", instructions="Tell the time.", tools=[get_time],
                  model=OpenAIResponsesModel(model="tools", openai_client=client),
                  model_settings=ModelSettings(max_tokens=120, temperature=0, tool_choice="get_time"),
                  tool_use_behavior="stop_on_first_tool", reset_tool_choice=True)
    result = asyncio.run(Runner.run(agent, "What time is it in Paris?"))
    assert len(calls) == 1 and isinstance(calls[0]["zone"], str)
    assert result.final_output == f"12:00 {calls[0]['zone']}"
    (call,) = [item for item in result.raw_responses[0].output if item.type == "function_call"]
    assert call.name == "get_time" and json.loads(call.arguments) == calls[0]


def test_reasoning_comes_as_a_reasoning_item(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    expected = client.chat.completions.create(model="thinker", messages=question, max_tokens=12,
                                              temperature=0).choices[0].message
    r = client.responses.create(model="thinker", input=question, max_output_tokens=12, temperature=0)
    assert [item.type for item in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == expected.reasoning_content and r.output_text == (expected.content or "")
    events = list(client.responses.create(model="thinker", input=question, max_output_tokens=12, temperature=0,
                                          stream=True))
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thought == expected.reasoning_content
    assert [item.type for item in events[-1].response.output] == ["reasoning", "message"]


def test_a_request_shaped_like_codexs_is_served(fleet: FleetServer) -> None:
    """Its fields, its history (a call, its output, an encrypted reasoning item) and its tools."""
    shell = {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": False,
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}},
                                                             "workdir": {"type": "string"}},
                            "required": ["command"], "additionalProperties": False}}
    body = {
        "model": "tools", "instructions": "You are Codex, a coding agent.", "stream": True, "store": False,
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context/>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files."}]},
            {"type": "reasoning", "summary": [], "content": None, "encrypted_content": "gAAAA"},
            {"type": "function_call", "name": "shell", "arguments": '{"command": ["ls"]}', "call_id": "call_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": "README.md\nrun"},
        ],
        "tools": [shell], "tool_choice": "auto", "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199-session", "max_output_tokens": 8,
    }
    with httpx.stream("POST", f"{fleet.base_url}/v1/responses", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        names = [line[len("event: "):] for line in r.iter_lines() if line.startswith("event: ")]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.incomplete"
