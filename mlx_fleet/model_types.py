"""Which engine a model needs ("text", "vision" or "embeddings"), decided from its files alone.

The supervisor and router call this for every model whose configured type is "auto", before any
worker exists, so it must be cheap and must not import MLX, transformers or huggingface_hub
(seconds of imports, and a process that never loads a model should not pay for them). It reads
only the model's `config.json` and looks next to it for sentence-transformers files:

* a local directory: `<dir>/config.json`;
* a Hugging Face repo id ("org/name"): the snapshot already in the local cache
  (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`); nothing is downloaded;
* a `.gguf` file: always "text" (llama.cpp files are converted for mlx-lm);
* anything else, or no readable config: "text", the engine that explains best what went wrong
  when it then fails to load.

The rules are ordered from the most specific signal to the least: sentence-transformers files
and encoder-only architectures mean embeddings (even with a vision tower: SigLIP/ColQwen style
retrievers are served by mlx-embeddings); a vision tower, an image token or a known
vision-language `model_type` means vision; everything else is text.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Final, Literal

ModelType = Literal["text", "vision", "embeddings"]

# Encoder-only families: they have no causal LM head, so the only useful thing to serve is an
# embedding (mlx-embeddings loads bert, xlm_roberta, modernbert, ...).
ENCODER_MODEL_TYPES: Final[frozenset[str]] = frozenset({
    "bert", "roberta", "xlm-roberta", "xlm_roberta", "camembert", "distilbert", "albert",
    "electra", "deberta", "deberta-v2", "mpnet", "nomic_bert", "jina_bert", "modernbert",
    "eurobert", "new", "e5", "bge_m3", "ernie_m", "mobilebert", "xlm", "luke", "rembert",
})

# Families that are embedding models even though their configs also look like vision or
# decoder models (image-text retrievers and late-interaction models served by mlx-embeddings).
EMBEDDING_MODEL_TYPES: Final[frozenset[str]] = frozenset({
    "siglip", "siglip2", "clip", "colqwen2", "colqwen2_5", "colidefics3", "colpali",
    "qwen3_vl_embedding", "llama_nemotron_vl_embedding", "gemma3_embedding", "ministral3_embedding",
    "lfm2_embedding", "lfm2_colbert", "llama_bidirec",
})

# Decoder families whose bare `*Model` architecture (no LM head) is published as an embedding
# model (EmbeddingGemma is `Gemma3TextModel`, Qwen3-Embedding exports `Qwen3Model`, ...).
DECODER_EMBEDDING_TYPES: Final[frozenset[str]] = frozenset({
    "qwen2", "qwen3", "gemma2", "gemma3_text", "llama", "mistral", "lfm2",
})

# Vision-language families that mlx-vlm serves. A config with `vision_config` or an image token
# is caught before this list is consulted; the list covers configs that carry neither.
VISION_MODEL_TYPES: Final[frozenset[str]] = frozenset({
    "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_omni_moe", "llava", "llava_next",
    "llava_onevision", "llava-qwen2", "llava_qwen2", "bunny-llama", "idefics2", "idefics3",
    "smolvlm", "paligemma", "gemma3", "gemma3n", "mllama", "pixtral", "mistral3", "aya_vision",
    "cohere2_vision", "florence2", "molmo", "molmo2", "moondream2", "moondream3", "phi3_v",
    "phi4mm", "phi4-siglip", "phi4_siglip", "multi_modality", "deepseek_vl_v2", "deepseekocr",
    "deepseekocr_2", "internvl", "internvl_chat", "kimi_vl", "glm4v", "glm4v_moe", "glm_ocr",
    "dots_ocr", "lfm2-vl", "lfm2_vl", "hunyuan_vl", "youtu_vl", "granite_vision",
    "granite4_vision", "paddleocr_vl", "ernie4_5_moe_vl", "minicpmo", "minicpmv4_6",
    "minicpmv4_7", "llama4", "jina_vlm", "mage_vl", "zaya1_vl", "minimax_m3_vl", "plamo2vl",
    "llmjpvl", "fastvlm", "got", "falcon_ocr",
})

# Files that a sentence-transformers model (any backbone) keeps next to its config.json.
SENTENCE_TRANSFORMERS_MARKERS: Final[tuple[str, ...]] = (
    "modules.json", "config_sentence_transformers.json", "1_Pooling",
)

_IMAGE_TOKEN_KEYS: Final[tuple[str, ...]] = ("image_token_id", "image_token_index")

# Words in a model's name that give its kind away when its config.json does not (a vision model
# whose config carries no tower, an embedding model published as a plain decoder).
_VISION_NAME_WORDS: Final[frozenset[str]] = frozenset({"vl", "vlm", "vision"})
_EMBEDDING_NAME_WORDS: Final[frozenset[str]] = frozenset({"minilm", "sentence", "e5", "bge"})


def detect_type(path: str) -> ModelType:
    """The engine that serves the model at `path` (a directory, a `.gguf` file or a repo id)."""
    if path.lower().endswith(".gguf"):
        return "text"
    config_file = find_config(path)
    if config_file is None:
        return "text"
    config = read_json(config_file)
    if config is None:
        return "text"
    return classify(config, config_file.parent)


def classify(config: dict[str, Any], model_dir: Path | None = None) -> ModelType:
    """The engine for a parsed config.json; `model_dir` lets sentence-transformers files count."""
    model_type = str(config.get("model_type") or "").lower()
    architectures = [str(a) for a in config.get("architectures") or () if isinstance(a, str)]

    if model_dir is not None and any((model_dir / m).exists() for m in SENTENCE_TRANSFORMERS_MARKERS):
        return "embeddings"
    if model_type in EMBEDDING_MODEL_TYPES or _is_encoder_only(model_type, config):
        return "embeddings"
    if architectures and all(_is_bare_model(a) for a in architectures) and model_type in DECODER_EMBEDDING_TYPES:
        return "embeddings"
    if _has_vision(config) or model_type in VISION_MODEL_TYPES:
        return "vision"
    return "text"


def kind_from_name(name: str) -> ModelType | None:
    """The kind a model's name announces (`Qwen2.5-VL-3B`, `bge-small`, `nomic-embed-text`), if any."""
    words = [w for w in re.split(r"[-_./\s]+", name.lower()) if w]
    if any(w.startswith("embed") or w in _EMBEDDING_NAME_WORDS for w in words):
        return "embeddings"
    if any(w in _VISION_NAME_WORDS for w in words):
        return "vision"
    return None


def find_config(path: str) -> Path | None:
    """config.json of a local model directory, or of the cached snapshot of a hub repo id."""
    local = Path(path).expanduser()
    if local.is_dir():
        candidate = local / "config.json"
        return candidate if candidate.is_file() else None
    if local.is_file():
        return local if local.name == "config.json" else None
    snapshot = hf_cache_snapshot(path)
    if snapshot is not None:
        candidate = snapshot / "config.json"
        return candidate if candidate.is_file() else None
    return None


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded repos, with the same precedence it uses."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def hf_cache_snapshot(repo_id: str) -> Path | None:
    """The snapshot directory a `from_pretrained(repo_id)` would use offline, if any.

    `refs/main` names the snapshot huggingface_hub resolves by default; without it (a cache copied
    by hand, or only other revisions fetched) the newest snapshot that has a config.json is used.
    """
    parts = repo_id.strip("/").split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        return None
    repo = hf_cache_dir() / f"models--{parts[0]}--{parts[1]}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    try:
        ref = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        ref = ""
    if ref and (snapshots / ref / "config.json").is_file():
        return snapshots / ref
    candidates = [d for d in snapshots.iterdir() if (d / "config.json").is_file()]
    if not candidates:
        return None
    return max(candidates, key=_mtime)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_bare_model(architecture: str) -> bool:
    """`BertModel`, `Qwen3Model`: a backbone without a head (unlike `GPT2LMHeadModel`)."""
    return architecture.endswith("Model") and not architecture.endswith(("LMHeadModel", "PreTrainedModel"))


def _is_encoder_only(model_type: str, config: dict[str, Any]) -> bool:
    """BERT-like: a known encoder family, or (for unknown families) a BERT signature."""
    if model_type in ENCODER_MODEL_TYPES:
        return True
    if "bert" in model_type or "roberta" in model_type:
        return True
    if config.get("is_decoder") or config.get("is_encoder_decoder"):
        return False
    # Segment embeddings exist only in BERT-style encoders; no causal LM config has them.
    return "type_vocab_size" in config and "vision_config" not in config


def _has_vision(config: dict[str, Any]) -> bool:
    """A vision tower's config, or the id of the token that image features replace."""
    if config.get("vision_config") is not None:
        return True
    return any(config.get(key) is not None for key in _IMAGE_TOKEN_KEYS)


_ENGINE_PACKAGES: Final[dict[str, str]] = {"text": "mlx_lm", "vision": "mlx_vlm", "embeddings": "mlx_embeddings"}


def model_type_of(path: str) -> str | None:
    """config.json's `model_type` (None for a GGUF file or a model whose config is not at hand)."""
    config_file = None if path.lower().endswith(".gguf") else find_config(path)
    config = read_json(config_file) if config_file is not None else None
    if not config:
        return None
    return str(config.get("model_type") or "").lower() or None


def engine_knows(kind: str, model_type: str) -> bool:
    """Whether the engine package for `kind` ships a module for `model_type`, found on disk without
    importing the package (which would import MLX). mlx-lm also renames a few types (mistral →
    llama): a False here is a warning, not a verdict."""
    spec = importlib.util.find_spec(_ENGINE_PACKAGES.get(kind, "mlx_lm"))
    if spec is None or not spec.submodule_search_locations:
        return False
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    name = model_type.replace("-", "_")
    return (models / f"{name}.py").exists() or (models / name).is_dir()
