"""A conversation's next turn reuses its prefix in every API, even when the client sends the history
back differently from what the model generated (thinking dropped from past turns, tool calls
re-serialised, a client's own edit): the worker takes the longest common prefix of the prompt and a
cached entry and trims the entry to it. Each API reports the reuse in its own field."""

from __future__ import annotations

import anthropic
import httpx
import openai

from fleet_server import FleetServer

SYSTEM = ("You are a careful assistant for a long agent session. Keep every fact the user gives you, "
          "answer briefly, and never invent a number or a colour that was not given. ") * 3
FIRST = "Please remember the number forty two and the colour green."
SECOND = "What did I ask you to remember?"
REWRITTEN = "I will remember them."  # not what the model said: the history as a client re-renders it


def test_chat_reuses_a_prefix_whose_assistant_turn_was_rewritten(client: openai.OpenAI, fleet: FleetServer) -> None:
    first_turn = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": FIRST}]
    first = client.chat.completions.create(model="tiny", messages=first_turn, max_tokens=8, temperature=0)
    assert first.choices[0].message.content != REWRITTEN
    second = client.chat.completions.create(model="tiny", max_tokens=8, temperature=0, messages=[
        *first_turn, {"role": "assistant", "content": REWRITTEN}, {"role": "user", "content": SECOND}])
    cached = second.usage.prompt_tokens_details.cached_tokens
    # everything up to the assistant's text (its header is the end of the first prompt) comes from the cache
    assert first.usage.prompt_tokens - 2 <= cached < second.usage.prompt_tokens, (cached, first.usage)
    # /metrics counts what the cache supplied (a scrape writes the usage queue first)
    metrics = httpx.get(f"{fleet.base_url}/metrics", timeout=10).text
    counted = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith('mlx_fleet_cached_prompt_tokens_total{model="tiny"}')]
    assert counted and counted[0] >= cached, counted


def test_messages_reuse_a_prefix_whose_assistant_turn_was_rewritten(fleet: FleetServer) -> None:
    claude = anthropic.Anthropic(base_url=fleet.base_url, api_key="none", max_retries=0, timeout=60)
    first_turn = [{"role": "user", "content": FIRST}]
    first = claude.messages.create(model="tiny", system=SYSTEM, max_tokens=8, messages=first_turn)
    second = claude.messages.create(model="tiny", system=SYSTEM, max_tokens=8, messages=[
        *first_turn, {"role": "assistant", "content": REWRITTEN}, {"role": "user", "content": SECOND}])
    prompt = first.usage.input_tokens + first.usage.cache_read_input_tokens
    assert prompt - 2 <= second.usage.cache_read_input_tokens, (second.usage, first.usage)
    assert second.usage.input_tokens > 0


def test_responses_reuse_a_prefix_whose_assistant_turn_was_rewritten(client: openai.OpenAI) -> None:
    first = client.responses.create(model="tiny", instructions=SYSTEM, input=FIRST, max_output_tokens=8,
                                    temperature=0, store=False)
    history = [{"role": "user", "content": FIRST}, {"role": "assistant", "content": REWRITTEN},
               {"role": "user", "content": SECOND}]
    second = client.responses.create(model="tiny", instructions=SYSTEM, input=history, max_output_tokens=8,
                                     temperature=0, store=False)
    cached = second.usage.input_tokens_details.cached_tokens
    assert first.usage.input_tokens - 2 <= cached < second.usage.input_tokens, (cached, first.usage)
