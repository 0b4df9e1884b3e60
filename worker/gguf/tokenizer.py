"""The converter's tokenizer (`gguf.convert`): a Hugging Face byte-level BPE `tokenizer.json`
rebuilt from the GGUF's vocabulary and merges, and its `tokenizer_config.json`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from mlx_fleet.worker.gguf.read import GGUFConversionError, Metadata

# llama.cpp token types (enum llama_token_type).
_TOKEN_TYPE_CONTROL: Final[int] = 3
_TOKEN_TYPE_USER_DEFINED: Final[int] = 4


def _gpt2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _smollm_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # SmolLM's tokenizer.json splits every digit into its own token before the
    # GPT-2 byte-level regex.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


# Keyed by ``tokenizer.ggml.pre``, which names the pre-tokenizer regex
# llama.cpp applies. Only those whose Hugging Face equivalent is known are
# listed: a wrong pre-tokenizer still loads but tokenizes text differently
# from how the model was trained.
_PRE_TOKENIZERS: Final[Mapping[str, Callable[[], pre_tokenizers.PreTokenizer]]] = {
    "gpt-2": _gpt2_pre_tokenizer,
    "smollm": _smollm_pre_tokenizer,
}


@dataclass(frozen=True)
class SpecialTokens:
    """Token strings for the ids named in the metadata (None when not given)."""

    bos: str | None
    eos: str | None
    unk: str | None
    pad: str | None


def build_tokenizer(meta: Metadata) -> tuple[Tokenizer, SpecialTokens]:
    """Rebuild the byte-level BPE tokenizer from the GGUF vocabulary and merges."""
    pre = _checked_pre_tokenizer(meta)
    tokens: list[str] = meta.require("tokenizer.ggml.tokens")
    token_types: list[int] = meta.get("tokenizer.ggml.token_type") or []

    tokenizer = Tokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(tokens)}, merges=_merge_pairs(meta)))
    tokenizer.pre_tokenizer = _PRE_TOKENIZERS[pre]()
    tokenizer.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, ...) must be matched verbatim and never
    # split by BPE; user-defined tokens too, but they decode as normal text.
    tokenizer.add_tokens(
        [
            AddedToken(tokens[i], special=(kind == _TOKEN_TYPE_CONTROL), normalized=False)
            for i, kind in enumerate(token_types)
            if kind in (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED)
        ]
    )
    special = _special_tokens(meta, tokens)
    if meta.get("tokenizer.ggml.add_bos_token", False) and special.bos is not None:
        # Hugging Face fast tokenizers add BOS through the post-processor,
        # not through tokenizer_config's add_bos_token.
        bos_id = tokens.index(special.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{special.bos}:0 $A:0",
            pair=f"{special.bos}:0 $A:0 {special.bos}:1 $B:1",
            special_tokens=[(special.bos, bos_id)],
        )
    return tokenizer, special


def _checked_pre_tokenizer(meta: Metadata) -> str:
    """The pre-tokenizer's name, once the tokenizer is known to be one this converter rebuilds."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFConversionError(
            f"{meta.src}: unsupported tokenizer model {model!r}; only 'gpt2' (byte-level BPE) is supported"
        )
    pre = meta.get("tokenizer.ggml.pre")
    if pre not in _PRE_TOKENIZERS:
        raise GGUFConversionError(
            f"{meta.src}: unsupported tokenizer pre-tokenizer {pre!r}; "
            f"supported: {', '.join(sorted(_PRE_TOKENIZERS))}"
        )
    return pre


def _merge_pairs(meta: Metadata) -> list[tuple[str, str]]:
    """The BPE merges ("left right" strings in the GGUF) as pairs."""
    pairs: list[tuple[str, str]] = []
    for merge in meta.require("tokenizer.ggml.merges"):
        left, sep, right = merge.partition(" ")
        if not sep:
            raise GGUFConversionError(f"{meta.src}: malformed BPE merge {merge!r}")
        pairs.append((left, right))
    return pairs


def _special_tokens(meta: Metadata, tokens: list[str]) -> SpecialTokens:
    """The strings of the special tokens the metadata names by id, each checked against the vocabulary."""

    def token_for(key: str) -> str | None:
        token_id = meta.get(key)
        if token_id is None:
            return None
        if not 0 <= token_id < len(tokens):
            raise GGUFConversionError(f"{meta.src}: {key}={token_id} is outside the vocabulary")
        return tokens[token_id]

    return SpecialTokens(
        bos=token_for("tokenizer.ggml.bos_token_id"),
        eos=token_for("tokenizer.ggml.eos_token_id"),
        unk=token_for("tokenizer.ggml.unknown_token_id"),
        pad=token_for("tokenizer.ggml.padding_token_id"),
    )


def tokenizer_config(meta: Metadata, special: SpecialTokens, max_length: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
    }
    for key, token in (
        ("bos_token", special.bos),
        ("eos_token", special.eos),
        ("unk_token", special.unk),
        ("pad_token", special.pad),
    ):
        if token is not None:
            config[key] = token
    if (template := meta.get("tokenizer.chat_template")) is not None:
        config["chat_template"] = template
    return config

