"""Tiny random-weight models that the *real* MLX loaders accept.

The test-suite needs model directories that go through exactly the code paths a
user's model does (``mlx_lm.load``, ``mlx_vlm.load``, ``mlx_embeddings.load``)
without a model hub, a network or hundreds of megabytes of weights. Every
builder here writes a complete Hugging Face style directory (config, weights,
tokenizer) in well under a second.

Design choices worth knowing about:

* **Deterministic.** The tokenizers are trained on :data:`CORPUS`, a constant in
  this module, rather than on files of installed packages (which change with
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
"""

from __future__ import annotations

import copy
import importlib
import json
import string
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

__all__ = [
    "CHATML_TEMPLATE",
    "CORPUS",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "QWEN2_VL_CHAT_TEMPLATE",
    "QWEN2_VL_SPECIAL_TOKENS",
    "QWEN_THINKING_TEMPLATE",
    "QWEN_TOOL_TEMPLATE",
    "NO_SYSTEM_TEMPLATE",
    "TOOL_SPECIAL_TOKENS",
    "TokenizerInfo",
    "build_bpe_tokenizer",
    "build_tiny_bert",
    "build_tiny_lm",
    "build_tiny_qwen2_vl",
    "build_wordpiece_tokenizer",
]

# A few paragraphs of ordinary English (varied words, punctuation, digits). It is
# embedded so that the trained vocabularies never change under us, and it is
# long enough for a 512-token byte-level BPE to fill its whole vocabulary.
CORPUS: Final[str] = """\
The old lighthouse stood at the northern end of the bay for more than 140 years. \
Every evening at 7:45 the keeper climbed its 96 steps, lit the lamp, and wrote the \
weather in a leather notebook: wind from the west, light rain, visibility about \
3 miles. Ships passing the point in 1893 could see the beam from 18 nautical miles away.

Baking bread at home is easier than most people think. Mix 500 grams of flour with \
350 millilitres of warm water, 10 grams of salt and a small spoon of yeast. Knead the \
dough for ten minutes, cover it, and let it rise until it has doubled in size; this \
usually takes one to two hours. Bake at 220 degrees for 35 minutes, then let it cool.

On Monday the city council voted 7 to 2 to repair the bridge over the river. The \
work will cost roughly $4.2 million, and the mayor said it should be finished by \
October. "We cannot wait another winter," she told reporters. Drivers should expect \
delays on Main Street, Second Avenue and the road to the airport.

Why do cats sleep so much? A healthy adult cat sleeps between 12 and 16 hours a day. \
Its ancestors hunted at dawn and dusk, so saving energy during the day made sense. \
Kittens and older cats may sleep even longer, sometimes up to 20 hours!

Alice packed her bag quickly: two shirts, a warm jacket, a map, a notebook, three \
pencils, and a bottle of water. The train left at 06:30, and she did not want to \
miss it again. Her brother, who was still half asleep, asked where she was going. \
"North," she said, "to the mountains, and then wherever the path leads."

A good experiment starts with a simple question and a careful plan. Write down what \
you expect to happen, change only one thing at a time, and measure the result at \
least 3 times. If the numbers disagree, check your tools before you doubt the theory. \
Science is slow, patient work; most of it is checking, counting and writing things down.

The market opens at 8 o'clock on Saturday morning. Farmers bring apples, pears, \
potatoes, onions, fresh eggs, honey and cheese from the valley. Prices are fair: a \
dozen eggs costs $3, and a jar of honey is $7.50. By noon the square is full of \
music, children, dogs and the smell of coffee.

Learning a language takes time. Read a little every day, listen to songs and the \
radio, and do not be afraid of mistakes. After 6 months you will understand simple \
stories; after 2 years you may dream in your new language. Practice, rest, repeat.
"""

ENDOFTEXT: Final[str] = "<|endoftext|>"
IM_START: Final[str] = "<|im_start|>"
IM_END: Final[str] = "<|im_end|>"
# Order matters: the trainer assigns ids 0, 1, 2 to these in this order.
CHATML_SPECIAL_TOKENS: Final[tuple[str, ...]] = (ENDOFTEXT, IM_START, IM_END)

# Qwen2-VL's processor expands each <|image_pad|> into one token per merged
# patch, and the model finds the image by these ids (config image_token_id,
# vision_start_token_id, ...), so the tokenizer must know them as specials.
QWEN2_VL_SPECIAL_TOKENS: Final[tuple[str, ...]] = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

_TEXT_PARTS_LOOP: Final[str] = (
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
)
_MEDIA_PARTS_LOOP: Final[str] = (
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% endif %}"
    "{% endfor %}"
)


def _chatml_template(parts_loop: str) -> str:
    """ChatML with string content, OpenAI-style content-part lists or no content.

    Only the handling of content-part lists differs between the text and the
    vision template, so both are generated from this one skeleton.
    """
    return (
        "{% for message in messages %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% elif message['content'] %}" + parts_loop + "{% endif %}"
        "<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


#: ChatML as Qwen uses it; content parts other than text are dropped.
CHATML_TEMPLATE: Final[str] = _chatml_template(_TEXT_PARTS_LOOP)
#: ChatML where image/video parts become Qwen2-VL's vision placeholder tokens.
QWEN2_VL_CHAT_TEMPLATE: Final[str] = _chatml_template(_MEDIA_PARTS_LOOP)

#: Qwen-style tool and thinking markers; each is one special token in the fixtures that use them.
TOOL_SPECIAL_TOKENS: Final[tuple[str, ...]] = ("<tool_call>", "</tool_call>", "<think>", "</think>")


def _qwen_tool_template(think: bool) -> str:
    """Qwen 2.5/3's tool template, trimmed: tools in the system turn, assistant calls as
    ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, tool results in a user turn. mlx-lm
    infers its ``json_tools`` parser from ``<tool_call>`` and ``tool_call.name``. With
    ``think=True`` the generation prompt opens a ``<think>`` block unless ``enable_thinking`` is
    false (then it is given closed and empty, as Qwen3 does).
    """
    opening = ("{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
               "{% else %}<think>\n{% endif %}") if think else ""
    return (
        "{% if tools %}<|im_start|>system\n"
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
        "# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n"
        "Call a function as <tool_call>{\"name\": <name>, \"arguments\": <args>}</tool_call><|im_end|>\n"
        "{% endif %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' and tools %}"
        "{% elif message['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message['content'] }}"
        "\n</tool_response><|im_end|>\n"
        "{% else %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% endif %}"
        "{% for tool_call in message.get('tool_calls') or [] %}{% set tool_call = tool_call.function %}"
        "<tool_call>\n{\"name\": \"{{ tool_call.name }}\", \"arguments\": {{ tool_call.arguments | tojson }}}"
        "\n</tool_call>{% endfor %}<|im_end|>\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n" + opening + "{% endif %}"
    )


QWEN_TOOL_TEMPLATE: Final[str] = _qwen_tool_template(think=False)
QWEN_THINKING_TEMPLATE: Final[str] = _qwen_tool_template(think=True)
#: Refuses a system message, as Gemma's and older Mistral's templates do.
NO_SYSTEM_TEMPLATE: Final[str] = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    + CHATML_TEMPLATE
)

_WORDPIECE_SPECIAL_TOKENS: Final[tuple[str, ...]] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Lower-case letters, digits and punctuation (BERT's normalizer lower-cases).
_ASCII_ALPHABET: Final[str] = string.ascii_lowercase + string.digits + string.punctuation
_LM_ARCHITECTURES: Final[Mapping[str, str]] = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
# Multiplies the library's default initialisation. At full scale the top two
# logits of these 2-layer models came within 0.01 of each other, so a greedy
# pick could flip with a different kernel or batch shape; at 0.5 the gap
# measured >= 0.3 (the model then mostly echoes its current input token, via the
# tied embeddings), which keeps greedy outputs stable across code paths.
_INIT_SCALE: Final[float] = 0.5


@dataclass(frozen=True)
class TokenizerInfo:
    """What a builder learned about the tokenizer it wrote.

    ``vocab_size`` is the tokenizer's full size (specials included); the model
    configs use it as their ``vocab_size`` so every id the model can emit decodes.
    """

    path: Path
    vocab_size: int
    pad_token_id: int
    eos_token_id: int | None
    special_token_ids: Mapping[str, int] = field(hash=False)

    def token_id(self, token: str) -> int:
        """The id of a special token, raising ``KeyError`` for unknown ones."""
        return self.special_token_ids[token]


def _corpus_lines() -> Iterator[str]:
    """Yield the corpus line by line, the granularity the trainers expect."""
    yield from CORPUS.splitlines()


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON with sorted keys so that repeated builds are byte-identical."""
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _mx_dtype(name: str) -> mx.Dtype:
    """Map a dtype name such as ``"float32"`` to the MLX dtype, rejecting others."""
    dtype = getattr(mx, name, None)
    if not isinstance(dtype, mx.Dtype) or not mx.issubdtype(dtype, mx.floating):
        raise ValueError(f"unsupported floating dtype {name!r}")
    return dtype


def build_bpe_tokenizer(
    out_dir: Path,
    vocab_size: int = 512,
    extra_special_tokens: Sequence[str] = (),
    *,
    chat_template: str = CHATML_TEMPLATE,
    model_max_length: int = 2048,
) -> TokenizerInfo:
    """Train a byte-level BPE (GPT-2 / Qwen style) on :data:`CORPUS` and save it.

    Special tokens get the lowest ids: ``<|endoftext|>`` = 0, ``<|im_start|>`` = 1,
    ``<|im_end|>`` = 2, then ``extra_special_tokens`` in order. Byte-level BPE
    with the full 256-byte initial alphabet can encode any text, so tests may send
    arbitrary Unicode. Writes ``tokenizer.json``, ``tokenizer_config.json`` (ChatML
    template, eos ``<|im_end|>``, pad ``<|endoftext|>``) and
    ``special_tokens_map.json``.
    """
    specials = list(dict.fromkeys((*CHATML_SPECIAL_TOKENS, *extra_special_tokens)))
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus_lines(), trainer=trainer)
    tokenizer.save(str(out_dir / "tokenizer.json"))

    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": None,
            "eos_token": IM_END,
            "pad_token": ENDOFTEXT,
            "unk_token": None,
            "additional_special_tokens": list(extra_special_tokens),
            "add_bos_token": False,
            # Decoding must give back exactly what was encoded (the server
            # streams text); the legacy clean-up would eat spaces before ".".
            "clean_up_tokenization_spaces": False,
            "model_max_length": model_max_length,
            "chat_template": chat_template,
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "eos_token": IM_END,
            "pad_token": ENDOFTEXT,
            "additional_special_tokens": list(extra_special_tokens),
        },
    )
    ids = {token: _required_id(tokenizer, token) for token in specials}
    return TokenizerInfo(
        path=out_dir,
        vocab_size=tokenizer.get_vocab_size(),
        pad_token_id=ids[ENDOFTEXT],
        eos_token_id=ids[IM_END],
        special_token_ids=ids,
    )


def build_wordpiece_tokenizer(out_dir: Path, vocab_size: int = 1024) -> TokenizerInfo:
    """Build an uncased BERT WordPiece tokenizer from :data:`CORPUS` and save it.

    Ids: ``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2, ``[SEP]`` = 3, ``[MASK]`` = 4,
    then every character of the corpus and of printable ASCII, the same with a
    ``##`` continuation prefix, then whole corpus words by falling frequency
    while ``vocab_size`` allows (a cap: the small corpus gives fewer). Any ASCII text thus
    tokenizes without ``[UNK]``. Inputs are wrapped as ``[CLS] text [SEP]``.

    The vocabulary is built here rather than by ``trainers.WordPieceTrainer``
    because that trainer is not deterministic: it numbers the ``##`` pieces in
    hash-map order, which also changes which merges win ties, so two trainings
    give different files (tokenizers 0.23). ``vocab.txt`` is written too
    because BERT tokenizers conventionally ship it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    word_counts: Counter[str] = Counter(
        word
        for line in _corpus_lines()
        for word, _span in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))
    )
    characters = sorted({char for word in word_counts for char in word} | set(_ASCII_ALPHABET))
    base = [*_WORDPIECE_SPECIAL_TOKENS, *characters, *(f"##{char}" for char in characters)]
    if vocab_size < len(base):
        raise ValueError(f"vocab_size must be at least {len(base)} (specials and characters)")
    words = sorted(word_counts.keys() - set(base), key=partial(_by_falling_count, counts=word_counts))
    vocabulary = base + words[: vocab_size - len(base)]
    token_ids = {token: index for index, token in enumerate(vocabulary)}

    tokenizer = Tokenizer(models.WordPiece(token_ids, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(list(_WORDPIECE_SPECIAL_TOKENS))
    ids = {token: _required_id(tokenizer, token) for token in _WORDPIECE_SPECIAL_TOKENS}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tokenizer.save(str(out_dir / "tokenizer.json"))

    (out_dir / "vocab.txt").write_text("".join(f"{token}\n" for token in vocabulary), encoding="utf-8")
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "model_max_length": 512,
        },
    )
    return TokenizerInfo(
        path=out_dir,
        vocab_size=tokenizer.get_vocab_size(),
        pad_token_id=ids["[PAD]"],
        eos_token_id=None,
        special_token_ids=ids,
    )


def _by_falling_count(word: str, *, counts: Mapping[str, int]) -> tuple[int, str]:
    """Sort key: most frequent words first, ties broken alphabetically."""
    return (-counts[word], word)


def _required_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of ``token``; a missing special token is a bug, not a ``None``."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise RuntimeError(f"special token {token!r} missing from the trained vocabulary")
    return token_id


def _random_parameters(model: nn.Module, dtype: mx.Dtype) -> None:
    """Scale the (seeded) default initialisation and cast it to ``dtype``."""
    model.update(tree_map(partial(_scale_and_cast, dtype=dtype), model.parameters()))
    mx.eval(model.parameters())


def _scale_and_cast(parameter: mx.array, *, dtype: mx.Dtype) -> mx.array:
    """One parameter multiplied by :data:`_INIT_SCALE` and cast to ``dtype``."""
    return (parameter * _INIT_SCALE).astype(dtype)


def _zero_rows(weight: mx.array, rows: Sequence[int]) -> mx.array:
    """A copy of ``weight`` with ``rows`` set to zero (the tied embedding's special tokens)."""
    mask = mx.ones((weight.shape[0], 1), dtype=weight.dtype)
    mask[mx.array(list(rows))] = 0
    return weight * mask


def build_tiny_lm(
    out_dir: Path,
    *,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    intermediate_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    dtype: str = "float32",
    max_position_embeddings: int = 2048,
    seed: int = 0,
    suppress_eos: bool = True,
    chat_template: str = CHATML_TEMPLATE,
    extra_special_tokens: Sequence[str] = (),
) -> Path:
    """Write a random-weight ``mlx_lm`` model directory and return ``out_dir``.

    The model is the real ``mlx_lm.models.<arch>.Model`` (``"llama"`` or
    ``"qwen2"``) with tied embeddings, saved with ``mlx_lm.utils.save_model``
    and ``save_config`` so ``mlx_lm.load(str(out_dir))`` treats it like any
    converted checkpoint. float32 is the default because MLX's bf16/fp16 CPU
    kernels are slow on Linux. ``suppress_eos`` zeroes the embedding rows of the
    special tokens (EOS included) so greedy decoding never stops early. ``chat_template`` and
    ``extra_special_tokens`` make tool-calling and thinking fixtures (:data:`QWEN_TOOL_TEMPLATE`
    with :data:`TOOL_SPECIAL_TOKENS`).
    """
    if arch not in _LM_ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(_LM_ARCHITECTURES)}, not {arch!r}")
    mx_dtype = _mx_dtype(dtype)
    # Imported here, not at module level: ``import mlx_lm`` costs ~2 s
    # (transformers) and tests that only need BERT should not pay for it.
    from mlx_lm.utils import save_config, save_model

    info = build_bpe_tokenizer(out_dir, extra_special_tokens=extra_special_tokens, chat_template=chat_template,
                               model_max_length=max_position_embeddings)
    config: dict[str, Any] = {
        "model_type": arch,
        "architectures": [_LM_ARCHITECTURES[arch]],
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": hidden_size // num_heads,
        "rms_norm_eps": 1e-6,
        "vocab_size": info.vocab_size,
        "max_position_embeddings": max_position_embeddings,
        "rope_theta": 10000.0,
        "rope_traditional": False,
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": info.eos_token_id,
        "pad_token_id": info.pad_token_id,
        "torch_dtype": dtype,
    }
    module = importlib.import_module(f"mlx_lm.models.{arch}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(copy.deepcopy(config)))
    _random_parameters(model, mx_dtype)
    if suppress_eos:
        embedding = model.model.embed_tokens.weight
        model.model.embed_tokens.weight = _zero_rows(embedding, sorted(info.special_token_ids.values()))
        mx.eval(model.parameters())

    save_model(out_dir, model)
    save_config(config, out_dir / "config.json")
    return out_dir


def build_tiny_qwen2_vl(
    out_dir: Path,
    *,
    seed: int = 0,
    dtype: str = "float32",
    suppress_eos: bool = True,
) -> Path:
    """Write a random-weight Qwen2-VL directory that ``mlx_vlm.load`` accepts.

    Qwen2-VL is the simplest VLM to fake: mlx-vlm ships a numpy image processor
    for it, so no torchvision is needed. Text model: hidden 64, 2 layers, 4 heads
    (2 kv), head_dim 16, mrope sections [2, 3, 3] (they must sum to
    head_dim / 2). Vision tower: depth 2, embed_dim 32, 2 heads, 14-pixel
    patches merged 2x2, so a 56x56 image becomes 4 ``<|image_pad|>`` tokens
    (``min_pixels`` = 56*56, ``max_pixels`` = 112*112 keep images tiny).
    ``suppress_eos`` works as in :func:`build_tiny_lm`.
    """
    mx_dtype = _mx_dtype(dtype)
    # Imported here: ``import mlx_vlm`` costs ~2.5 s.
    from mlx_lm.utils import save_config
    from mlx_vlm.models import qwen2_vl

    info = build_bpe_tokenizer(
        out_dir,
        vocab_size=512,
        extra_special_tokens=QWEN2_VL_SPECIAL_TOKENS,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
        model_max_length=4096,
    )
    vision_config: dict[str, Any] = {
        "model_type": "qwen2_vl",
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 2,
        # transformers validates this config strictly: a float fails to load.
        "mlp_ratio": 2,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config: dict[str, Any] = {
        "model_type": "qwen2_vl",
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": info.vocab_size,
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
        # The three sections (temporal, height, width) must sum to head_dim / 2 = 8.
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": True,
        # Qwen's bos is <|endoftext|>; transformers' default (151643) would be
        # outside this vocabulary and draw a warning on every load.
        "bos_token_id": info.token_id(ENDOFTEXT),
        "eos_token_id": info.eos_token_id,
        "pad_token_id": info.pad_token_id,
        "image_token_id": info.token_id("<|image_pad|>"),
        "video_token_id": info.token_id("<|video_pad|>"),
        "vision_start_token_id": info.token_id("<|vision_start|>"),
        "vision_end_token_id": info.token_id("<|vision_end|>"),
        "torch_dtype": dtype,
        "vision_config": vision_config,
    }

    model_config = qwen2_vl.ModelConfig.from_dict(copy.deepcopy(config))
    model_config.text_config = qwen2_vl.TextConfig.from_dict(model_config.text_config)
    model_config.vision_config = qwen2_vl.VisionConfig.from_dict(copy.deepcopy(vision_config))
    mx.random.seed(seed)
    model = qwen2_vl.Model(model_config)
    _random_parameters(model, mx_dtype)

    weights = dict(tree_flatten(model.parameters()))
    if suppress_eos:
        key = "language_model.model.embed_tokens.weight"
        weights[key] = _zero_rows(weights[key], sorted(info.special_token_ids.values()))
    # Store the Conv3d patch kernel in torch layout [out, in, t, kh, kw] as HF
    # checkpoints do, so loading takes the same path as a real model: the
    # loader's VisionModel.sanitize guesses the layout from the shape and
    # transposes to MLX's [out, t, kh, kw, in] when it looks like torch's.
    patch_key = "vision_tower.patch_embed.proj.weight"
    weights[patch_key] = weights[patch_key].transpose(0, 4, 1, 2, 3)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    save_config(copy.deepcopy(config), out_dir / "config.json", keep_vision_config=True)

    image_processor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "min_pixels": 56 * 56,
        "max_pixels": 112 * 112,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    _write_json(out_dir / "preprocessor_config.json", image_processor)
    # Without this file the processor calls hf_hub_download with the directory
    # as repo id (harmless for absolute paths, a network request for relative
    # ones such as "models/tiny") before falling back to the image settings.
    _write_json(out_dir / "video_preprocessor_config.json", image_processor)
    _write_json(out_dir / "processor_config.json", {"processor_class": "Qwen2VLProcessor"})
    (out_dir / "chat_template.jinja").write_text(QWEN2_VL_CHAT_TEMPLATE, encoding="utf-8")
    return out_dir


def build_tiny_bert(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a random-weight BERT directory that ``mlx_embeddings.load`` accepts.

    Parameter names are ``mlx_embeddings.models.bert.Model``'s, which match HF
    ``BertModel``'s, so the loader needs no renaming. Hidden size 64, 2 layers,
    4 heads; the model's ``text_embeds`` output is mean-pooled and L2-normalised.
    """
    # Imported here: ``import mlx_embeddings`` pulls in mlx_vlm (~2.5 s).
    from mlx_embeddings.models import bert

    info = build_wordpiece_tokenizer(out_dir)
    config: dict[str, Any] = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": info.vocab_size,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": info.pad_token_id,
    }
    mx.random.seed(seed)
    model = bert.Model(bert.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    return out_dir


def end_answers_at(model_dir: Path, text: str) -> Path:
    """Make a built model end its answers where it would write ``text`` (one token): that token
    joins ``eos_token_id`` in ``config.json``, which mlx-lm reads as the end of a sequence.

    Random weights (with ``suppress_eos``) never reach the real end-of-sequence token, so every
    answer ends at its length limit; a client that needs a finished answer (an agent's final
    output, a Responses ``response.completed``) needs a model that ends on its own. Greedy
    decoding of these models soon repeats one token, so ending at that token ends every answer.
    """
    (token,) = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids
    config = json.loads((model_dir / "config.json").read_text())
    eos = config["eos_token_id"]
    config["eos_token_id"] = [*(eos if isinstance(eos, list) else [eos]), token]
    _write_json(model_dir / "config.json", config)
    return model_dir


def always_writes(model_dir: Path, token: str) -> Path:
    """Make a model built by :func:`build_tiny_lm` write the special ``token`` at every step
    (a model that opens a tool call and never writes one that parses).

    Greedy decoding of random weights settles on repeating one token; ``token``'s (tied)
    embedding row becomes a copy of that token's, 5% longer. Its logit then beats the other's
    wherever that one's is positive, and as input it acts as the other did, so the model keeps
    writing it. The settled token can change with the new row: repeated until it is ``token``.
    """
    from mlx_lm import load
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler
    from mlx_lm.utils import save_model

    model, tokenizer = load(str(model_dir))
    target = tokenizer.convert_tokens_to_ids(token)
    prompt = mx.array(tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True))
    for _ in range(4):
        written = [t for t, _ in generate_step(prompt, model, max_tokens=16, sampler=make_sampler(temp=0.0))]
        settled = max(set(written), key=written.count)
        if settled == target:
            save_model(model_dir, model)
            return model_dir
        embedding = model.model.embed_tokens.weight
        embedding[target] = 1.05 * embedding[settled]
        model.model.embed_tokens.weight = embedding
    raise RuntimeError(f"the model at {model_dir} does not settle on writing {token!r}")
