"""Tools, structured outputs, logprobs and reasoning through the real stack, with the strict
`openai` client. The models have random weights: a forced call or a schema comes back valid
*because* of constrained decoding, never by luck."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import openai
import pytest
import zmq

from fleet_server import FleetServer, chat_text, strict_client, write_config
from mlx_fleet.protocol import ChatInput, Generate, Message, Sampling, Tool, ToolChoice
from tiny_models import (
    NO_SYSTEM_TEMPLATE,
    QWEN_THINKING_TEMPLATE,
    QWEN_TOOL_TEMPLATE,
    TOOL_SPECIAL_TOKENS,
    always_writes,
    build_tiny_lm,
)
from worker_process import generate, worker

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
# Bounded values: a random model would otherwise write one string or number until max_tokens.
WEATHER = {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
           "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}}}
CLOCK = {"type": "object", "additionalProperties": False, "required": ["zone"],
         "properties": {"zone": {"enum": ["utc", "cet"]}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Time now", "parameters": CLOCK}}]
ANSWER = {"type": "object", "additionalProperties": False, "required": ["answer", "sure", "score"],
          "properties": {"answer": {"type": "string", "maxLength": 10}, "sure": {"type": "boolean"},
                         "score": {"type": "integer", "minimum": 0, "maximum": 9}}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("agent-models")
    return {
        "tools": build_tiny_lm(root / "tools", arch="qwen2", chat_template=QWEN_TOOL_TEMPLATE,
                               extra_special_tokens=TOOL_SPECIAL_TOKENS),
        "thinker": build_tiny_lm(root / "thinker", arch="qwen2", seed=2, chat_template=QWEN_THINKING_TEMPLATE,
                                 extra_special_tokens=TOOL_SPECIAL_TOKENS),
        "nosystem": build_tiny_lm(root / "nosystem", seed=3, chat_template=NO_SYSTEM_TEMPLATE),
        # opens a tool call at every step and never writes one that parses
        "opener": always_writes(build_tiny_lm(root / "opener", arch="qwen2", seed=4, chat_template=QWEN_TOOL_TEMPLATE,
                                              extra_special_tokens=TOOL_SPECIAL_TOKENS), "<tool_call>"),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path], tiny_lm: Path) -> Iterator[FleetServer]:
    root = tmp_path_factory.mktemp("agent-fleet")
    server = FleetServer(write_config(root / "fleet.toml", {**models, "plain": tiny_lm}), root / "state").wait_ready()
    yield server
    server.stop()


@pytest.fixture
def client(server: FleetServer) -> openai.OpenAI:
    return strict_client(server.base_url)


def _valid(instance: dict, schema: dict) -> bool:
    """Enough of JSON Schema for the schemas above."""
    if set(instance) != set(schema["properties"]):
        return False
    for key, rule in schema["properties"].items():
        value = instance[key]
        if "enum" in rule and value not in rule["enum"]:
            return False
        if rule.get("type") == "string" and not (isinstance(value, str) and len(value) <= rule["maxLength"]):
            return False
        if rule.get("type") == "boolean" and not isinstance(value, bool):
            return False
        if rule.get("type") == "integer" and not (isinstance(value, int) and 0 <= value <= 9):
            return False
    return True


# -- structured outputs ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_reply_validates(client: openai.OpenAI, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER, "strict": True}}
    text, finish = chat_text(client, stream, model="tools", messages=USER, max_tokens=80, temperature=0,
                             response_format=fmt)
    assert finish == ["stop"]
    assert _valid(json.loads(text), ANSWER)


def test_json_object_reply_is_an_object(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="plain", messages=USER, max_tokens=200, temperature=0,
                                       response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_schemas_hold_for_concurrent_requests_in_the_batch(client: openai.OpenAI) -> None:
    """Constrained and free requests share the batch; each keeps its own grammar (or none)."""
    from concurrent.futures import ThreadPoolExecutor

    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}}

    def ask(i: int):
        extra = {"response_format": fmt} if i % 2 == 0 else {}
        return client.chat.completions.create(model="tools", messages=[{"role": "user", "content": f"q{i}"}],
                                              max_tokens=60, temperature=0, **extra)

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(ask, range(6)))
    for i, r in enumerate(replies):
        if i % 2 == 0:
            assert _valid(json.loads(r.choices[0].message.content), ANSWER)
        else:
            assert r.choices[0].finish_reason == "length"


def test_a_schema_llguidance_cannot_compile_is_a_400(client: openai.OpenAI) -> None:
    bad = {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tools", messages=USER, max_tokens=8,
                                       response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": bad}})
    assert e.value.body["param"] == "response_format"
    assert client.chat.completions.create(model="tools", messages=USER, max_tokens=2).choices[0].finish_reason


# -- tools -------------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_forced_call_is_valid_against_its_schema(client: openai.OpenAI, choice) -> None:
    r = client.chat.completions.create(model="tools", messages=USER, tools=TOOLS, tool_choice=choice,
                                       max_tokens=120, temperature=0)
    (call,) = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.id.startswith("call_")
    schema = {"get_weather": WEATHER, "get_time": CLOCK}[call.function.name]
    if isinstance(choice, dict):
        assert call.function.name == "get_time"
    assert _valid(json.loads(call.function.arguments), schema)
    assert "<tool_call>" not in (r.choices[0].message.content or "")


@pytest.fixture(scope="module")
def tools_worker(models: dict[str, Path]) -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """The tool model in a worker of its own, read straight from its sink: one Delta a message."""
    with worker(models["tools"], "text") as (control, sink, _):
        yield control, sink


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_streamed_call_arguments_arrive_as_deltas_equal_to_the_whole_call(client: openai.OpenAI, tools_worker,
                                                                          choice) -> None:
    """How many chunks a call's arguments take depends on how fast the router reads (it frames
    what arrived together as one chunk), so the HTTP stream is checked for what holds however its
    pieces were merged, and the pieces themselves where nothing merges them: the worker's sink."""
    kwargs = dict(model="tools", messages=USER, tools=TOOLS, tool_choice=choice, max_tokens=120, temperature=0)
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    first, *rest = deltas
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function" and first.function.name
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert _valid(json.loads(arguments), {"get_weather": WEATHER, "get_time": CLOCK}[first.function.name])
    assert "<tool_call>" not in content and "tool_call" not in content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    (whole,) = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    assert (whole.function.name, whole.function.arguments) == (first.function.name, arguments)

    # The same request as the router sends it, to a worker of the same model: a Delta per token
    tools = tuple(Tool(t["function"]["name"], t["function"]["description"], json.dumps(t["function"]["parameters"]))
                  for t in TOOLS)
    wire_choice = ToolChoice("function", choice["function"]["name"]) if isinstance(choice, dict) else ToolChoice(choice)
    request = Generate(ChatInput((Message("user", USER[0]["content"]),), tools, wire_choice),
                       Sampling(max_tokens=120, temperature=0.0))
    sent, done = generate(*tools_worker, request)
    assert done.finish_reason == "tool_calls" and all(d.tokens == 1 for d in sent)
    pieces = [p for d in sent for p in d.tool_calls]
    assert len([d for d in sent if any(p.arguments for p in d.tool_calls)]) >= 2  # streamed, not sent whole
    assert (pieces[0].name, "".join(p.arguments for p in pieces)) == (first.function.name, arguments)


@pytest.mark.parametrize("stream", [False, True])
def test_under_auto_a_block_that_never_parses_is_plain_content(client: openai.OpenAI, stream: bool) -> None:
    kwargs = dict(model="opener", messages=USER, tools=TOOLS, max_tokens=12, temperature=0)
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        choice = client.chat.completions.create(**kwargs).choices[0]
        assert choice.message.tool_calls is None
        content, finish = choice.message.content, [choice.finish_reason]
    assert content == "<tool_call>" * 12  # the block, markers and all: an answer, not half a call
    assert finish == ["length"]


def test_a_conversation_with_calls_and_results_renders_through_the_template(client: openai.OpenAI) -> None:
    history = USER + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                              "arguments": '{"city": "Paris", "unit": "c"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    r = client.chat.completions.create(model="tools", messages=history, tools=TOOLS, max_tokens=4, temperature=0)
    plain = client.chat.completions.create(model="tools", messages=USER, tools=TOOLS, max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 20  # the call and its result are in the prompt
    assert r.choices[0].finish_reason == "length"


def test_tools_on_a_model_without_tool_support_is_a_400_naming_tools(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="plain", messages=USER, tools=TOOLS, max_tokens=4)
    assert e.value.body["param"] == "tools"


def test_naming_a_function_that_is_not_offered_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tools", messages=USER, tools=TOOLS, max_tokens=4,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice"


# -- logprobs ----------------------------------------------------------------------------------


def _in_process_logprobs(model_dir: Path, messages: list[dict], n: int) -> list[tuple[int, list[float]]]:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(str(model_dir))
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    steps = generate_step(mx.array(prompt), model, max_tokens=n, sampler=make_sampler(temp=0.0))
    return [(token, logprobs.tolist()) for token, logprobs in steps]


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs_equal_the_models_log_softmax(client: openai.OpenAI, tiny_lm: Path, stream: bool) -> None:
    expected = _in_process_logprobs(tiny_lm, USER, 6)
    kwargs = dict(model="plain", messages=USER, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        got = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    else:
        got = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    assert len(got) == 6
    for item, (token, row) in zip(got, expected):
        assert math.isclose(item.logprob, row[token], abs_tol=1e-4)
        assert len(item.top_logprobs) == 3
        best = sorted(row, reverse=True)[:3]
        assert all(math.isclose(a.logprob, b, abs_tol=1e-4) for a, b in zip(item.top_logprobs, best))
        assert item.bytes == list(item.token.encode())


def test_completion_logprobs(client: openai.OpenAI) -> None:
    r = client.completions.create(model="plain", prompt="The old lighthouse", max_tokens=5, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(v <= 0 for v in lp.token_logprobs) and all(len(t) <= 2 for t in lp.top_logprobs)


# -- reasoning and robustness ------------------------------------------------------------------


def test_thinking_goes_to_reasoning_content(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="thinker", messages=USER, max_tokens=12, temperature=0)
    message = r.choices[0].message
    assert message.model_extra["reasoning_content"]  # the template opened <think>: all of it is thinking
    assert not message.content
    off = client.chat.completions.create(model="thinker", messages=USER, max_tokens=12, temperature=0,
                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert off.choices[0].message.content and "reasoning_content" not in off.choices[0].message.model_extra


def test_streamed_thinking_arrives_as_reasoning_deltas(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="thinker", messages=USER, max_tokens=12, temperature=0,
                                                 stream=True))
    reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model="thinker", messages=USER, max_tokens=12, temperature=0)
    assert reasoning == whole.choices[0].message.model_extra["reasoning_content"]


def test_schema_applies_after_thinking_when_thinking_is_off(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}}
    r = client.chat.completions.create(model="thinker", messages=USER, max_tokens=80, temperature=0,
                                       response_format=fmt, reasoning_effort="none")
    assert _valid(json.loads(r.choices[0].message.content), ANSWER)


def test_a_template_that_refuses_the_conversation_is_a_400_and_the_worker_keeps_serving(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="nosystem", max_tokens=4,
                                       messages=[{"role": "system", "content": "Be brief."}, *USER])
    assert "System role not supported" in e.value.body["message"]
    assert client.chat.completions.create(model="nosystem", messages=USER, max_tokens=3).usage.completion_tokens == 3


def test_template_arguments_the_server_sets_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="thinker", messages=USER, max_tokens=2,
                                       extra_body={"chat_template_kwargs": {"chat_template": "{{ 'x' }}"}})
    assert e.value.body["param"] == "chat_template_kwargs"


def test_documented_fields_without_effect_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="plain", messages=USER, max_tokens=2, store=False, user="u",
                                       metadata={"k": "v"}, service_tier="auto", parallel_tool_calls=True,
                                       prediction={"type": "content", "content": "x"})
    assert r.usage.completion_tokens == 2


# -- one real framework, end to end --------------------------------------------------------------


def test_langchain_bind_tools_and_structured_output(server: FleetServer) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    @tool
    def get_time(zone: Literal["utc", "cet"]) -> str:
        """The time now in a zone."""
        return "12:00"

    class Verdict(BaseModel):
        """A short verdict."""

        answer: str = Field(max_length=10)
        sure: bool
        score: int = Field(ge=0, le=9)

    llm = ChatOpenAI(model="tools", base_url=f"{server.base_url}/v1", api_key="none", temperature=0, max_tokens=100)
    message = llm.bind_tools([get_time], tool_choice="get_time").invoke("What time is it?")
    (call,) = message.tool_calls
    assert call["name"] == "get_time" and call["args"]["zone"] in ("utc", "cet")
    verdict = llm.with_structured_output(Verdict).invoke("Is the sky blue?")
    assert isinstance(verdict, Verdict) and 0 <= verdict.score <= 9
    chunks = list(llm.bind_tools([get_time], tool_choice="get_time").stream("What time is it?"))
    assert sum(bool(c.tool_call_chunks) for c in chunks) >= 2  # the arguments arrived in pieces
    (streamed,) = sum(chunks[1:], chunks[0]).tool_calls  # LangChain's own accumulation of the pieces
    assert streamed["name"] == "get_time" and streamed["args"] == call["args"]
