"""Embeddings for one mlx-embeddings model: whole requests, answered in one call.

An embedding request has no stream and no sampling: the worker hands the whole `Embed` body to
`EmbeddingEngine.embed` and sends back what it returns (an `Embeddings` or a `Failure`) as the
request's END. Inputs are tokenized, sorted by length and run in chunks (at most `batch_size`
inputs and about `max_batch_tokens` padded tokens per forward pass), each chunk padded only to
its own longest input and masked, so padding costs little and never changes a vector. The vectors
are the model's own `text_embeds` (pooled and L2-normalised by mlx-embeddings, as
sentence-transformers would), written as OpenAI's float32 little-endian rows.

Inputs longer than the model's context are refused rather than truncated: a silently shortened
input gives a vector for text the client did not send.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_fleet.protocol import Embed, Embeddings, Failure
from mlx_fleet.worker.engines.base import Engine, context_length_of, tokenizer_limit, vocab_size

# Beyond this no encoder we serve was trained, and attention cost grows with its square.
MAX_LENGTH_CAP = 8192
DEFAULT_MAX_LENGTH = 512


class EmbeddingEngine(Engine):
    """Turns `Embed` requests into `Embeddings` with an mlx-embeddings model and its tokenizer."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        context_length: int | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 16384,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length or max_length_of(model, tokenizer)
        self.batch_size = batch_size
        self.max_batch_tokens = max(max_batch_tokens, self.context_length)
        self.vocab_size = vocab_size(getattr(model, "config", None), getattr(tokenizer, "_tokenizer", tokenizer))
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad_id = int(pad) if isinstance(pad, int) else 0
        self._left_pad = getattr(tokenizer, "padding_side", "right") == "left"
        # One tiny forward pass tells the real output width (a projection head may change it) and
        # checks that this model gives one vector per input, before the worker says READY.
        probe = self._forward([list(self._tokenize(["probe"])[0])])
        if probe.ndim != 2:
            raise ValueError(
                f"this model returns embeddings of shape {tuple(probe.shape)}, not one vector per input "
                "(multi-vector models are not served)"
            )
        self.dim = int(probe.shape[-1])

    # -- requests ---------------------------------------------------------------------------

    def embed(self, request: Embed) -> Embeddings | Failure:
        """Vectors for every input, in order, or the first reason the request cannot run."""
        if request.texts and request.tokens:
            return Failure("invalid_value", "Give either texts or token lists, not both.", 400, "input")
        if not request.texts and not request.tokens:
            return Failure("invalid_value", "The input is empty: give at least one string or token list.", 400, "input")
        if request.texts:
            try:
                sequences = self._tokenize(request.texts)
            except Exception as e:  # noqa: BLE001 - tokenizers raise their own error types
                return Failure("invalid_value", f"The input cannot be tokenized: {e}", 400, "input")
        else:
            sequences = [list(t) for t in request.tokens]
        failure = self._check(sequences, from_tokens=bool(request.tokens))
        if failure is not None:
            return failure
        vectors = np.empty((len(sequences), self.dim), dtype="<f4")
        for chunk in self._chunks(sequences):
            rows = self._forward([sequences[i] for i in chunk])
            vectors[chunk] = np.asarray(rows.astype(mx.float32), dtype="<f4")
        return Embeddings(self.dim, vectors.tobytes(), tuple(len(s) for s in sequences))

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with the model's special tokens ([CLS] ... [SEP]), never truncated."""
        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, padding=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def _check(self, sequences: list[list[int]], *, from_tokens: bool) -> Failure | None:
        for index, ids in enumerate(sequences):
            if not ids:
                return Failure("invalid_value", f"Input {index} is empty.", 400, "input")
            if len(ids) > self.context_length:
                return Failure(
                    "context_length_exceeded",
                    f"Input {index} is {len(ids)} tokens long, but this model's maximum input length is "
                    f"{self.context_length} tokens. Please shorten or split it.",
                    400,
                    "input",
                )
            if from_tokens:
                bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
                if bad is not None:
                    return Failure(
                        "invalid_value",
                        f"Input {index}: token id {bad} is out of vocabulary (0..{self.vocab_size - 1}).",
                        400,
                        "input",
                    )
        return None

    def _chunks(self, sequences: list[list[int]]) -> list[list[int]]:
        """Indices grouped shortest first, each group within the batch and padded-token budgets."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        chunks: list[list[int]] = []
        current: list[int] = []
        for i in order:
            longest = len(sequences[i])  # sorted: the newest member is the longest
            if current and (len(current) >= self.batch_size or (len(current) + 1) * longest > self.max_batch_tokens):
                chunks.append(current)
                current = []
            current.append(i)
        if current:
            chunks.append(current)
        return chunks

    def _forward(self, sequences: list[list[int]]) -> mx.array:
        """`text_embeds` of one padded, masked batch, evaluated."""
        width = max(len(s) for s in sequences)
        ids = np.full((len(sequences), width), self._pad_id, dtype=np.int32)
        mask = np.zeros((len(sequences), width), dtype=np.int32)
        for row, seq in enumerate(sequences):
            if self._left_pad:
                ids[row, width - len(seq):] = seq
                mask[row, width - len(seq):] = 1
            else:
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
        outputs = self.model(mx.array(ids), attention_mask=mx.array(mask))
        embeds = getattr(outputs, "text_embeds", None)
        if embeds is None:
            raise ValueError("this model gives no text_embeds: it is not a text embedding model")
        mx.eval(embeds)
        return embeds


def load_embeddings(path: str, **options: Any) -> EmbeddingEngine:
    """Load an mlx-embeddings model directory (or cached repo id) into an `EmbeddingEngine`."""
    from mlx_embeddings import load

    model, tokenizer = load(path)
    return EmbeddingEngine(model, tokenizer, **options)


def max_length_of(model: Any, tokenizer: Any) -> int:
    """The longest input the model takes: its context length, but never more than the tokenizer
    declares (XLM-R has 514 positions for 512 tokens), capped at `MAX_LENGTH_CAP`."""
    context = context_length_of(getattr(model, "config", None), tokenizer, DEFAULT_MAX_LENGTH)
    return min(context, tokenizer_limit(tokenizer) or MAX_LENGTH_CAP, MAX_LENGTH_CAP)
