"""The router's HTTP layer in-process, on a fake fleet (`fake_fleet_client`): each API's shapes,
errors in each API's envelope, who gets in, and a streamed answer, in milliseconds per test."""

from __future__ import annotations

import base64
import inspect
import json
import time
from collections.abc import Iterator

import openai
import pytest
from litestar.testing import TestClient

from fake_fleet_client import CONTEXT_LENGTH, FakeFleetClient, answer, say
from fleet_server import strict_client
from mlx_fleet.config import FleetConfig, ModelConfig, ServerConfig
from mlx_fleet.protocol import ChatInput, Embed, Failure, Generate, GetCatalog, TextInput
from mlx_fleet.router.app import create_app
from mlx_fleet.router.fleet.client import FleetClient
from mlx_fleet.runtime import Endpoints

API_KEY, ADMIN_KEY = "sk-user-0123456789", "sk-admin-0123456789"
USER = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MODELS = [ModelConfig(id="m", path="/x", type="text", aliases=["alias-m"], temperature=0.7),
          ModelConfig(id="e", path="/y", type="embeddings")]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, FakeFleetClient]]:
    """The whole app, in-process, with a fake fleet where the ZeroMQ connection would be."""
    fake = FakeFleetClient(MODELS)
    root = tmp_path_factory.mktemp("router")
    config = FleetConfig(server=ServerConfig(api_keys=[API_KEY], admin_key=ADMIN_KEY, state_dir=str(root / "state")),
                         models=MODELS)
    app = create_app(config, Endpoints(root), time.time(), client=fake)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client, fake


@pytest.fixture
def api(shared: tuple[TestClient, FakeFleetClient]) -> tuple[TestClient, FakeFleetClient]:
    """One app for the module's tests; its fake fleet as new for each (answering, nothing sent yet)."""
    _, fake = shared
    fake.start()
    fake.script = answer
    fake.requests.clear()
    fake.calls.clear()
    return shared


def events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("event"), fields["data"]))
    return out


def test_the_fake_has_the_real_clients_interface() -> None:
    for name, member in vars(FleetClient).items():
        if callable(member) and not name.startswith("_"):
            assert inspect.signature(getattr(FakeFleetClient, name)) == inspect.signature(member), name
    assert {"streams", "down"} <= vars(FakeFleetClient(MODELS)).keys()  # what begin_drain and the router read


# -- shapes ------------------------------------------------------------------------------------


def test_a_chat_completion_is_openais_shape_and_sends_the_worker_a_generate(api) -> None:
    client, fake = api
    r = client.post("/v1/chat/completions", headers=USER, json={"model": "alias-m", "messages": HI})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    # an alias goes to the supervisor as it was named (the supervisor resolves it)
    assert body["object"] == "chat.completion" and body["model"] == "alias-m" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello, world"},
                                "finish_reason": "stop", "logprobs": None}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    model, _, request = fake.requests[-1]
    assert model == "alias-m" and isinstance(request, Generate) and isinstance(request.input, ChatInput)
    assert request.input.messages[0].content == "hi"
    # what the request left out: the model's temperature, the server's limit (which the worker may shorten)
    assert request.sampling.temperature == 0.7 and request.sampling.max_tokens == ServerConfig().default_max_tokens
    assert request.sampling.max_tokens_is_default


def test_a_streamed_chat_completion_is_chunks_then_done(api) -> None:
    client, _ = api
    r = client.post("/v1/chat/completions", headers=USER,
                    json={"model": "m", "messages": HI, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    data = [d for _, d in events(r.text)]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello, world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5


def test_a_text_completion_sends_its_prompt_as_text(api) -> None:
    client, fake = api
    r = client.post("/v1/completions", headers=USER, json={"model": "m", "prompt": "once", "max_tokens": 5})
    assert r.status_code == 200
    assert r.json()["object"] == "text_completion" and r.json()["choices"][0]["text"] == "Hello, world"
    request = fake.requests[-1][2]
    assert request.input == TextInput("once") and request.sampling.max_tokens == 5


def test_embeddings_come_back_as_floats_or_base64(api) -> None:
    client, fake = api
    r = client.post("/v1/embeddings", headers=USER, json={"model": "e", "input": ["a", "b"]})
    assert r.status_code == 200
    assert [d["embedding"] for d in r.json()["data"]] == [[1.0, 2.0], [1.0, 2.0]]
    assert r.json()["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert fake.requests[-1][2] == Embed(texts=("a", "b"))
    r = client.post("/v1/embeddings", headers=USER, json={"model": "e", "input": "a", "encoding_format": "base64"})
    assert base64.b64decode(r.json()["data"][0]["embedding"]) == b"\x00\x00\x80?\x00\x00\x00@"


def test_models_are_the_catalogs_enabled_ones(api) -> None:
    client, _ = api
    r = client.get("/v1/models", headers=USER)
    assert [(m["id"], m["type"]) for m in r.json()["data"]] == [("m", "text"), ("e", "embeddings")]
    assert {m["context_length"] for m in r.json()["data"]} == {CONTEXT_LENGTH}


def test_responses_and_anthropic_messages_have_their_own_shapes(api) -> None:
    client, _ = api
    r = client.post("/v1/responses", headers=USER, json={"model": "m", "input": "hi"})
    assert r.status_code == 200 and r.json()["object"] == "response" and r.json()["status"] == "completed"
    assert r.json()["output"][0]["content"][0]["text"] == "Hello, world"
    r = client.post("/v1/messages", headers=USER, json={"model": "m", "messages": HI, "max_tokens": 10})
    assert r.status_code == 200
    assert r.json()["content"] == [{"type": "text", "text": "Hello, world"}] and r.json()["stop_reason"] == "end_turn"
    r = client.post("/v1/messages/count_tokens", headers=USER, json={"model": "m", "messages": HI})
    assert r.json() == {"input_tokens": 7}


def test_a_streamed_anthropic_message_is_its_events_in_order(api) -> None:
    client, _ = api
    r = client.post("/v1/messages", headers=USER, json={"model": "m", "messages": HI, "max_tokens": 10, "stream": True})
    names = [name for name, _ in events(r.text)]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]


# -- errors, each in its API's envelope -------------------------------------------------------------


def test_openai_errors_are_in_openais_envelope(api) -> None:
    client, _ = api
    r = client.post("/v1/chat/completions", headers=USER, json={"model": "nope", "messages": HI})
    assert r.status_code == 404
    assert r.json() == {"error": {"message": "The model `nope` does not exist or you do not have access to it.",
                                  "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
    r = client.post("/v1/chat/completions", headers=USER, json={"model": "m", "messages": HI, "bogus": 1})
    assert r.status_code == 400 and r.json()["error"]["message"] == "Unrecognized request argument supplied: bogus"
    r = client.post("/v1/chat/completions", headers=USER, json={"model": "m", "messages": HI, "temperature": 3})
    assert r.status_code == 400 and r.json()["error"]["code"] == "decimal_above_max_value"


def test_a_failure_before_the_first_token_keeps_its_status_and_code(api) -> None:
    client, fake = api
    fake.script = lambda model, request: [Failure("worker_crashed", "The model's worker stopped.", 500)]
    r = client.post("/v1/chat/completions", headers=USER, json={"model": "m", "messages": HI, "stream": True})
    assert r.status_code == 500 and r.headers["x-should-retry"] == "false"
    assert r.json()["error"]["code"] == "worker_crashed"
    r = client.post("/v1/messages", headers=USER, json={"model": "m", "messages": HI, "max_tokens": 5})
    assert r.status_code == 500
    assert r.json() == {"type": "error", "error": {"type": "api_error", "message": "The model's worker stopped."}}


def test_a_failure_after_the_first_token_ends_the_stream_with_an_error_event(api) -> None:
    client, fake = api
    fake.script = lambda model, request: [*say("Hel")[:2], Failure("worker_crashed", "gone", 500)]
    r = client.post("/v1/chat/completions", headers=USER, json={"model": "m", "messages": HI, "stream": True})
    assert r.status_code == 200
    assert json.loads(events(r.text)[-1][1])["error"]["code"] == "worker_crashed"


def test_anthropic_errors_are_in_anthropics_envelope(api) -> None:
    client, _ = api
    r = client.post("/v1/messages", headers=USER, json={"model": "nope", "messages": HI, "max_tokens": 5})
    assert r.status_code == 404 and r.json()["type"] == "error" and r.json()["error"]["type"] == "not_found_error"
    r = client.post("/v1/messages", json={"model": "m", "messages": HI, "max_tokens": 5})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_an_unreachable_supervisor_is_a_503_everywhere(api) -> None:
    client, fake = api
    assert client.get("/health").status_code == 200
    fake.fail_all(Failure("supervisor_unavailable", "gone", 503))
    r = client.post("/v1/chat/completions", headers=USER, json={"model": "m", "messages": HI})
    assert r.status_code == 503 and r.json()["error"]["code"] == "supervisor_unavailable"
    assert client.get("/health").json()["error"]["code"] == "supervisor_unavailable"
    assert client.get("/admin/models/registry", headers=ADMIN).status_code == 503


def test_body_errors_are_worded_alike_on_admin_routes(api) -> None:
    client, _ = api
    r = client.post("/admin/profiles", headers=ADMIN, json={"name": "p"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "Missing required parameter: 'models'."
    r = client.put("/admin/models/m/enabled", headers=ADMIN, content=b"")
    assert r.status_code == 400 and "The body is empty" in r.json()["error"]["message"]


# -- who gets in ------------------------------------------------------------------------------------


def test_keys(api) -> None:
    client, fake = api
    assert client.get("/v1/models").status_code == 401
    r = client.get("/v1/models", headers={"Authorization": "Bearer wrong-key-value"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"x-api-key": API_KEY}).status_code == 200
    assert client.get("/v1/models", headers=ADMIN).status_code == 401  # the admin key is not a /v1 key
    assert client.get("/admin/models/registry", headers=USER).status_code == 403
    r = client.get("/admin/models/registry", headers=ADMIN)
    assert r.status_code == 200 and [m["id"] for m in r.json()["models"]] == ["m", "e"]
    assert fake.calls[-1] == GetCatalog()


def test_the_admin_key_reads_the_schema_which_documents_the_admin_routes(api) -> None:
    client, _ = api
    for path in ("/openapi.json", "/docs/openapi.json"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong-key-value"}).status_code == 401
        assert client.get(path, headers=USER).status_code == 200
        r = client.get(path, headers=ADMIN)
        assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"/admin/models/status", "/admin/keys", "/admin/profiles", "/admin/usage", "/metrics"} <= paths.keys()
    body = paths["/admin/profiles"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/NewProfile")



# -- the official client, in-process -------------------------------------------------------------


def test_the_openai_client_in_strict_mode_reads_chat_streams_and_errors(api) -> None:
    """The `openai` client, validating every answer against OpenAI's schema, over the in-process
    app (the test client is an httpx client, which `openai` takes as its transport)."""
    client, _ = api
    oai = strict_client(str(client.base_url), API_KEY, http_client=client)
    done = oai.chat.completions.create(model="m", messages=HI)
    assert done.choices[0].message.content == "Hello, world" and done.usage.total_tokens == 5
    stream = oai.chat.completions.create(model="m", messages=HI, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="nope", messages=HI)
    assert caught.value.code == "model_not_found"



def test_metrics_count_the_prompt_tokens_the_cache_supplied(api) -> None:
    """The hit ratio per model is rate(cached) / rate(prompt) of two counters; each API reports the
    same figure in its own field."""
    client, fake = api
    fake.script = lambda model, request: say("ok", prompt_tokens=300, cached_tokens=256)
    r = client.post("/v1/chat/completions", headers=USER, json={"model": "m", "messages": HI})
    assert r.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 256}
    r = client.post("/v1/messages", headers=USER, json={"model": "m", "max_tokens": 8, "messages": HI})
    assert r.json()["usage"]["cache_read_input_tokens"] == 256 and r.json()["usage"]["input_tokens"] == 44
    r = client.post("/v1/responses", headers=USER, json={"model": "m", "input": "hi"})
    assert r.json()["usage"]["input_tokens_details"]["cached_tokens"] == 256
    series: dict[str, float] = {}
    deadline = time.monotonic() + 10
    while series.get("mlx_fleet_cached_prompt_tokens_total") != 3 * 256 and time.monotonic() < deadline:
        time.sleep(0.05)  # the usage writer's thread feeds the counters
        text = client.get("/metrics", headers=ADMIN).text
        series = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(("mlx_fleet_cached_prompt_tokens_total{", "mlx_fleet_prompt_tokens_total{"))
                  and 'model="m"' in line}
    assert series["mlx_fleet_cached_prompt_tokens_total"] == 3 * 256
    assert series["mlx_fleet_prompt_tokens_total"] >= 3 * 300
