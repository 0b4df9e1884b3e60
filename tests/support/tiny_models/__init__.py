"""Tiny random-weight models that the *real* MLX loaders accept.

The test-suite needs model directories that go through exactly the code paths a
user's model does (``mlx_lm.load``, ``mlx_vlm.load``, ``mlx_embeddings.load``)
without a model hub, a network or hundreds of megabytes of weights. Every
builder here writes a complete Hugging Face style directory (config, weights,
tokenizer) in well under a second.

Design choices worth knowing about:

* **Deterministic.** The tokenizers are trained on :data:`CORPUS`, a constant in
  :mod:`~tiny_models.corpus`, rather than on files of installed packages (which change with
  versions), and MLX's RNG is seeded before a model is constructed. Building
  twice with the same arguments gives byte-identical files, so tests may compare
  hashes and expect identical greedy outputs.
* **Predictable lengths.** Greedy decoding of random weights tends to repeat a
  single token forever, but could in principle hit the end-of-sequence token at
  any step. With ``suppress_eos=True`` (the default) the embedding rows of the
  special tokens are zeroed. The models tie input and output embeddings, so
  those tokens always get logit 0 while the repeated token gets a clearly
  positive logit: generation always runs until ``max_tokens`` and ends with
  finish reason ``"length"``.
* **Structure, not text.** The weights are random, so callers should assert on
  token counts, finish reasons, shapes and determinism, never on the words.

The package's modules: :mod:`~tiny_models.corpus` (the training text),
:mod:`~tiny_models.chat_templates`, :mod:`~tiny_models.tokenizer_files`,
:mod:`~tiny_models.random_weights`, and one module per kind of model (text, vision, embedding).
Tests import every builder and constant from the package itself: ``from tiny_models import ...``.
"""

from tiny_models.chat_templates import (
    CHATML_SPECIAL_TOKENS,
    CHATML_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    NO_SYSTEM_TEMPLATE,
    QWEN2_VL_CHAT_TEMPLATE,
    QWEN2_VL_SPECIAL_TOKENS,
    QWEN_THINKING_TEMPLATE,
    QWEN_TOOL_TEMPLATE,
    TOOL_SPECIAL_TOKENS,
)
from tiny_models.corpus import CORPUS
from tiny_models.embedding_models import build_tiny_bert
from tiny_models.text_models import always_writes, build_tiny_lm, end_answers_at
from tiny_models.tokenizer_files import TokenizerInfo, build_bpe_tokenizer, build_wordpiece_tokenizer
from tiny_models.vision_models import build_tiny_qwen2_vl

__all__ = [
    "CHATML_SPECIAL_TOKENS",
    "CHATML_TEMPLATE",
    "CORPUS",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "NO_SYSTEM_TEMPLATE",
    "QWEN2_VL_CHAT_TEMPLATE",
    "QWEN2_VL_SPECIAL_TOKENS",
    "QWEN_THINKING_TEMPLATE",
    "QWEN_TOOL_TEMPLATE",
    "TOOL_SPECIAL_TOKENS",
    "TokenizerInfo",
    "always_writes",
    "build_bpe_tokenizer",
    "build_tiny_bert",
    "build_tiny_lm",
    "build_tiny_qwen2_vl",
    "build_wordpiece_tokenizer",
    "end_answers_at",
]
