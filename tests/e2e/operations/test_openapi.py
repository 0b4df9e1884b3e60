"""The OpenAPI schema describes the real API: schemathesis against the real stack on a tiny model.

Generated requests (valid and invalid, a bounded number per operation) go to a real server; every
answer must be documented (status, content type, body schema) and none may be a server error.
Bodies naming a model mostly name a real one, so generation, not just the 404, is exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fleet_server import FleetServer
from mlx_fleet.protocol import Done, Failure, TokenLogprob, Usage
from mlx_fleet.router.anthropic import types as an
from mlx_fleet.router.anthropic.events import whole_message
from mlx_fleet.router.fleet.exchange import Exchange
from mlx_fleet.router.fleet.reply import CallParts, GatheredReply
from mlx_fleet.router.http.encoding import line_json
from mlx_fleet.router.responses import types as rt
from mlx_fleet.router.responses.events import ResponseShape, output_of
from test_operations import ADMIN, ALL, write_ops_config
from tiny_models import build_tiny_bert

EXAMPLES = 20


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[FleetServer]:
    root = tmp_path_factory.mktemp("openapi")
    server = FleetServer(write_ops_config(root, tiny_lm, build_tiny_bert(root / "bert")), root / "state").wait_ready()
    yield server
    server.stop()


def _real_model(case) -> None:
    """Most generated bodies should reach a worker: name a model of the right type."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str) and hash(body["model"]) % 4:
        body["model"] = "bert" if case.path == "/v1/embeddings" else "tiny"


def _check(case, server: FleetServer) -> None:
    _real_model(case)
    key = ADMIN if case.path.startswith("/admin") or case.path == "/metrics" else ALL
    # A request valid by the schema may still be refused for what a schema cannot say (the prompt
    # plus max_tokens past the model's context, n > 1, tools): a documented 400, not a failure.
    case.call_and_validate(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60,
                           excluded_checks=[positive_data_acceptance])


def test_every_answer_is_documented_and_none_is_a_server_error(api_server: FleetServer) -> None:
    # One hypothesis run per operation and mode, driven here (schemathesis's own pytest loader does
    # not work with this pytest), each failure reported with its operation.
    spec = schemathesis.openapi.from_url(f"{api_server.base_url}/openapi.json",
                                         headers={"Authorization": f"Bearer {ALL}"})
    failures = []
    for result in spec.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                      derandomize=True,  # the same cases every run: CI must not fail on a new draw
                      phases=[Phase.explicit, Phase.generate])
            def run(case) -> None:
                _check(case, api_server)

            try:
                run()
            except Unsatisfiable:
                continue  # no parameter or body to make invalid
            except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 -- collected, reported together
                failures.append(f"{operation.label} ({mode.value}): {e}")
    # and, whatever was generated, one stream and one plain answer of each generating route
    hi = [{"role": "user", "content": "hi"}]
    payloads = {"/v1/chat/completions": {"messages": hi, "max_tokens": 4},
                "/v1/completions": {"prompt": "hi", "max_tokens": 4},
                "/v1/responses": {"input": "hi", "max_output_tokens": 4},
                "/v1/messages": {"messages": hi, "max_tokens": 4}}
    for path, payload in payloads.items():
        for stream in (True, False):
            case = spec[path]["POST"].Case(body={"model": "tiny", "stream": stream, **payload},
                                           media_type="application/json")
            _check(case, api_server)
    assert not failures, "\n\n".join(failures)


def test_the_schema_names_the_real_bodies(api_server: FleetServer) -> None:
    spec = httpx.get(f"{api_server.base_url}/openapi.json", headers={"Authorization": f"Bearer {ALL}"}).json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    ok = chat["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/ChatCompletion") and "text/event-stream" in ok
    assert chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Envelope")
    for path, reply in (("/v1/responses", "/ResponseObject"), ("/v1/messages", "/AnthropicMessage")):
        ok = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert ok["application/json"]["schema"]["$ref"].endswith(reply) and "text/event-stream" in ok
    for path in ("/v1/embeddings", "/admin/keys", "/admin/usage", "/admin/usage/latency", "/admin/system/summary"):
        assert path in spec["paths"]
    assert httpx.get(f"{api_server.base_url}/docs", headers={"Authorization": f"Bearer {ALL}"}).status_code == 200


@pytest.mark.parametrize("finish", ["stop", "length", "tool_calls"])
def test_whole_replies_with_every_part_are_what_the_schema_says(finish: str) -> None:
    """Thinking, text and tool calls, complete or cut short: parts a tiny model rarely makes when
    schemathesis asks, decoded strictly into the structs the schema is generated from."""
    reply = GatheredReply(texts=["Hel", "lo"], reasoning=["hmm"], tool_calls=[CallParts("call_1", "f", ['{"a":', " 1}"])],
                  answer_logprobs=[TokenLogprob("Hel", -0.5, (("Hel", -0.5), ("He", -1.5)))],
                  done=Done(finish, Usage(prompt_tokens=5, completion_tokens=3, cached_tokens=2)))  # type: ignore[arg-type]
    ex = Exchange(None, None, "tiny", 1, "id-1")  # type: ignore[arg-type]
    request = msgspec.json.decode(b'{"model": "tiny", "input": "hi", "tool_choice": {"type": "function", "name": "f"}}',
                                  type=rt.ResponsesRequest)
    shape = ResponseShape(ex, request, 0.7, 1.0)
    for built in (shape.finished(output_of(reply, reply.done), reply.done), shape.pending(),
                  shape.failed(Failure("worker_failed", "boom", 500))):
        decoded = msgspec.json.decode(line_json(built), type=rt.ResponseObject)
        assert decoded.status == built["status"]
    whole = msgspec.json.decode(line_json(shape.finished(output_of(reply, reply.done), reply.done)),
                                type=rt.ResponseObject)
    assert [type(item) for item in whole.output] == [
        rt.ResponseReasoningItem, rt.ResponseOutputMessage, rt.ResponseFunctionCall]
    assert whole.output[1].content[0].logprobs[0].top_logprobs[1].token == "He"
    message = msgspec.json.decode(line_json(whole_message(ex, reply)), type=an.AnthropicMessage)
    assert [type(block) for block in message.content] == [an.ReplyThinking, an.ReplyText, an.ReplyToolUse]
