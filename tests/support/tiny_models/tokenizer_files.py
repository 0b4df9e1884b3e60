"""The fixtures' tokenizers, trained on :data:`~tiny_models.corpus.CORPUS` and saved as a model's files.

A byte-level BPE (GPT-2 / Qwen style) for the language models and an uncased WordPiece for BERT.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from tiny_models.chat_templates import CHATML_SPECIAL_TOKENS, CHATML_TEMPLATE, ENDOFTEXT, IM_END
from tiny_models.corpus import corpus_lines
from tiny_models.files import write_json

_WORDPIECE_SPECIAL_TOKENS: Final[tuple[str, ...]] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Lower-case letters, digits and punctuation (BERT's normalizer lower-cases).
_ASCII_ALPHABET: Final[str] = string.ascii_lowercase + string.digits + string.punctuation


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
    tokenizer = _trained_bpe(specials, vocab_size)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_bpe_configs(out_dir, extra_special_tokens, chat_template, model_max_length)
    ids = {token: _required_id(tokenizer, token) for token in specials}
    return TokenizerInfo(
        path=out_dir,
        vocab_size=tokenizer.get_vocab_size(),
        pad_token_id=ids[ENDOFTEXT],
        eos_token_id=ids[IM_END],
        special_token_ids=ids,
    )


def _trained_bpe(specials: Sequence[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE trained on the corpus, ``specials`` first in its vocabulary."""
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
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    return tokenizer


def _write_bpe_configs(out_dir: Path, extra_special_tokens: Sequence[str], chat_template: str,
                       model_max_length: int) -> None:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` of a BPE tokenizer."""
    write_json(
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
    write_json(
        out_dir / "special_tokens_map.json",
        {
            "eos_token": IM_END,
            "pad_token": ENDOFTEXT,
            "additional_special_tokens": list(extra_special_tokens),
        },
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
    vocabulary = _wordpiece_vocabulary(normalizer, pre_tokenizer, vocab_size)
    tokenizer, ids = _wordpiece(vocabulary, normalizer, pre_tokenizer)
    tokenizer.save(str(out_dir / "tokenizer.json"))

    (out_dir / "vocab.txt").write_text("".join(f"{token}\n" for token in vocabulary), encoding="utf-8")
    write_json(
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


def _wordpiece_vocabulary(normalizer: normalizers.Normalizer, pre_tokenizer: pre_tokenizers.PreTokenizer,
                          vocab_size: int) -> list[str]:
    """Specials, characters, ``##`` characters, then the corpus's words by falling count (up to ``vocab_size``)."""
    word_counts: Counter[str] = Counter(
        word
        for line in corpus_lines()
        for word, _span in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))
    )
    characters = sorted({char for word in word_counts for char in word} | set(_ASCII_ALPHABET))
    base = [*_WORDPIECE_SPECIAL_TOKENS, *characters, *(f"##{char}" for char in characters)]
    if vocab_size < len(base):
        raise ValueError(f"vocab_size must be at least {len(base)} (specials and characters)")
    words = sorted(word_counts.keys() - set(base), key=partial(_by_falling_count, counts=word_counts))
    return base + words[: vocab_size - len(base)]


def _wordpiece(vocabulary: Sequence[str], normalizer: normalizers.Normalizer,
               pre_tokenizer: pre_tokenizers.PreTokenizer) -> tuple[Tokenizer, dict[str, int]]:
    """A WordPiece tokenizer over ``vocabulary`` wrapping inputs in ``[CLS] ... [SEP]``, and its specials' ids."""
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
    return tokenizer, ids


def _by_falling_count(word: str, *, counts: Mapping[str, int]) -> tuple[int, str]:
    """Sort key: most frequent words first, ties broken alphabetically."""
    return (-counts[word], word)


def _required_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of ``token``; a missing special token is a bug, not a ``None``."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise RuntimeError(f"special token {token!r} missing from the trained vocabulary")
    return token_id
