"""OpenAI's Responses API through the real stack, judged by the official client in strict mode.

The route is a translator onto the chat route's internals, so its oracle is the chat route: the
same conversation must give the same greedy text and the same token counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from fleet_server import FleetServer, write_config
from tiny_models import build_tiny_lm, end_answers_at

QUESTION = "Tell me about the weather today."


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[FleetServer]:
    """The tiny model, and one that ends its answers on its own ("tiny-stops")."""
    root = tmp_path_factory.mktemp("responses")
    stops = end_answers_at(build_tiny_lm(root / "stops", arch="llama"), "\n")
    server = FleetServer(write_config(root / "fleet.toml", {"tiny": tiny_lm, "tiny-stops": stops}),
                         root / "state").wait_ready()
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
    assert final.output_text == text and final.usage.output_tokens == 16
    assert final.usage.input_tokens == whole.usage.input_tokens


@pytest.mark.parametrize("extra,param", [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}, "tools"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format"),
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
