"""The OpenAI API through the real stack: HTTP → router → ZeroMQ → supervisor → worker → MLX."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from fleet_server import FleetServer, chat_text

PROMPT = [{"role": "user", "content": "Tell me about the weather today."}]


def in_process_greedy(model_dir: Path, messages: list[dict], max_tokens: int) -> str:
    """What mlx-lm itself produces for the same prompt, in this process: the oracle."""
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(str(model_dir))
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return generate(model, tokenizer, prompt=prompt, max_tokens=max_tokens, sampler=make_sampler(temp=0.0))


def test_models_lists_every_configured_model(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert {m.id for m in models} == {"tiny", "tiny-qwen"}
    # each with its context length, as the catalog reads it from config.json (the tiny models': 2048)
    assert {m.id: m.model_extra["context_length"] for m in models} == {"tiny": 2048, "tiny-qwen": 2048}


@pytest.mark.parametrize("model,fixture", [("tiny", "tiny_lm"), ("tiny-qwen", "tiny_qwen")])
def test_greedy_chat_equals_mlx_lm_in_process(client: openai.OpenAI, model: str, fixture: str,
                                             request: pytest.FixtureRequest) -> None:
    expected = in_process_greedy(request.getfixturevalue(fixture), PROMPT, 24)
    response = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=24, temperature=0)
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 24
    assert response.usage.total_tokens == response.usage.prompt_tokens + 24


def test_streamed_chat_equals_non_streamed(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=PROMPT, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=PROMPT, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content
    assert finishes == ["length"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stream_ends_with_done(fleet: FleetServer) -> None:
    body = {"model": "tiny", "messages": PROMPT, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{fleet.base_url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_text_completion_and_stream(client: openai.OpenAI, fleet: FleetServer) -> None:
    whole = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 12
    # OpenAI's own completion stream sends `"finish_reason": null` until the last chunk, which the
    # SDK's strict mode (it types the field as required non-null) rejects; so this one is lenient.
    lenient = openai.OpenAI(base_url=f"{fleet.base_url}/v1", api_key="none", max_retries=0)
    chunks = list(lenient.completions.create(model="tiny", prompt="Once upon a time", max_tokens=12,
                                             temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_completion_matches_mlx_lm_on_raw_prompt(client: openai.OpenAI, tiny_lm: Path) -> None:
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(str(tiny_lm))
    expected = generate(model, tokenizer, prompt="The river", max_tokens=10, sampler=make_sampler(temp=0.0))
    got = client.completions.create(model="tiny", prompt="The river", max_tokens=10, temperature=0)
    assert got.choices[0].text == expected


def test_stop_string_across_tokens_is_not_emitted(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="tiny", messages=PROMPT, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    # a stop string that spans the boundary between two streamed pieces of text
    start = len(text) // 2
    stop = text[start:start + 3]
    cut = text[: text.find(stop)]
    for stream in (False, True):
        got, reasons = chat_text(client, stream, model="tiny", messages=PROMPT, max_tokens=24, temperature=0,
                                 stop=[stop, "zzzz"] if stream else stop)
        assert got == cut
        assert stop not in got
        assert reasons == ["stop"]


def test_max_tokens_alias_and_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny", messages=PROMPT, max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    runs = {client.chat.completions.create(model="tiny", messages=PROMPT, max_tokens=12, temperature=1.5,
                                           seed=7).choices[0].message.content for _ in range(2)}
    assert len(runs) == 1


def test_concurrent_requests_do_not_mix(client: openai.OpenAI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    prompts = [[{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"}] for i in range(6)]
    serial = [client.chat.completions.create(model="tiny", messages=p, max_tokens=10, temperature=0)
              .choices[0].message.content for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda p: client.chat.completions.create(
            model="tiny", messages=p, max_tokens=10, temperature=0).choices[0].message.content, prompts))
    assert parallel == serial


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=PROMPT)
    assert e.value.body["code"] == "model_not_found"
    assert e.value.body["type"] == "invalid_request_error"


@pytest.mark.parametrize("body,param,code", [
    (b"{not json", None, None),
    (b"[1, 2]", None, None),
    (b'{"model": "tiny", "messages": []}', "messages", "empty_array"),
    (b'{"model": "tiny"}', "messages", "missing_required_parameter"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}',
     "max_tokens", "invalid_type"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
     "max_tokens", "integer_below_min_value"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
     "temperature", "decimal_above_max_value"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 2}', "n", "unsupported_value"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "foo": 1}', None, None),
])
def test_bad_input_is_400_in_openai_envelope(fleet: FleetServer, body: bytes, param: str | None,
                                             code: str | None) -> None:
    r = httpx.post(f"{fleet.base_url}/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert (error["param"], error["code"]) == (param, code)


def test_context_overflow_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="word " * 10, max_tokens=5000)
    assert e.value.body["code"] == "context_length_exceeded"
    assert e.value.body["param"] == "prompt"


def test_unknown_route_and_method(fleet: FleetServer) -> None:
    r = httpx.post(f"{fleet.base_url}/v1/foo", json={}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (POST /v1/foo)"
    r = httpx.get(f"{fleet.base_url}/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and "error" in r.json()


def test_next_chat_turn_reuses_the_prompt_cache(client: openai.OpenAI, tiny_lm: Path) -> None:
    first_turn = [{"role": "user", "content": "Please remember the number forty two and the colour green."}]
    first = client.chat.completions.create(model="tiny", messages=first_turn, max_tokens=8, temperature=0)
    second_turn = [*first_turn, {"role": "assistant", "content": first.choices[0].message.content},
                   {"role": "user", "content": "What did I ask you to remember?"}]
    second = client.chat.completions.create(model="tiny", messages=second_turn, max_tokens=8, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens - 1, (cached, first.usage.prompt_tokens)
    assert cached < second.usage.prompt_tokens
    # reusing the cache changes nothing in the output
    assert second.choices[0].message.content == in_process_greedy(tiny_lm, second_turn, 8)
