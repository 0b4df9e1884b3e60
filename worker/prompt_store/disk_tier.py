"""The engine's view of the disk tier: which whole blocks of a prompt are on disk, restore them
into a layer cache, and persist a finished request's blocks that are not there yet."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from mlx_fleet.worker.prompt_store.block_file import Block
from mlx_fleet.worker.prompt_store.identity import BLOCK_TOKENS, chain_keys, identity, model_fingerprint
from mlx_fleet.worker.prompt_store.kv_blocks import DTYPES, plain_kv, rebuild, snapshot
from mlx_fleet.worker.prompt_store.store import BlockStore
from mlx_fleet.worker.prompt_store.writer import BlockWriter, Job

log = logging.getLogger(__name__)


class DiskTier:
    def __init__(self, root: bytes, store: BlockStore, layers: int, shapes: tuple[tuple[int, ...], ...],
                 dtype: str) -> None:
        self.root = root
        self.store = store
        self.writer = BlockWriter(store)
        self._expected = (dtype, layers, *shapes)
        self._block_bytes = layers * sum(math.prod(s) for s in shapes) * DTYPES[dtype].size

    @classmethod
    def open(cls, model: object, model_dir: Path, folder: Path, max_bytes: int) -> DiskTier | None:
        """The tier for this model, or None when it is off or the model's cache cannot be sliced
        into blocks (rotating, arrays or quantized layers: said once, here)."""
        if max_bytes <= 0:
            return None
        cache = make_prompt_cache(model)
        if not plain_kv(cache):
            kinds = sorted({type(c).__name__ for c in cache})
            log.warning("prompt cache: disk tier off for this model (its layer caches are %s)", ", ".join(kinds))
            return None
        model(mx.array([[0]]), cache=cache)  # one token, to learn the KV's dtype and shapes
        first = cache[0]
        dtype = str(first.keys.dtype)
        if dtype not in DTYPES:
            log.warning("prompt cache: disk tier off for this model (its KV is %s)", dtype)
            return None
        shapes = tuple((1, s[1], BLOCK_TOKENS, s[3]) for s in (first.keys.shape, first.values.shape))
        root = identity(model_fingerprint(model_dir), dtype, len(cache), *shapes)
        return cls(root, BlockStore(folder, root.hex(), max_bytes), len(cache), shapes, dtype)

    def keys(self, tokens: list[int]) -> list[str]:
        """The keys of the blocks a prompt may restore: whole blocks, leaving at least one token to compute."""
        return chain_keys(self.root, tokens[: len(tokens) - 1])

    def stored(self, keys: list[str]) -> int:
        """How many of the chain's first blocks are on disk."""
        for i, key in enumerate(keys):
            if not self.store.has(key):
                return i
        return len(keys)

    def restore(self, keys: list[str]) -> list | None:
        """A layer cache holding the chain's leading blocks that load, or None if none does."""
        blocks: list[Block] = []
        for key in keys:
            block = self.store.read(key)
            if (block is None or (block.dtype, block.layers, block.key_shape, block.value_shape) != self._expected
                    or len(block.payload) != self._block_bytes):
                break
            blocks.append(block)
        if not blocks:
            return None
        self.store.touch([b.key for b in blocks])
        return rebuild(blocks)

    def persist(self, tokens: list[int], cache: list) -> None:
        """Snapshot the blocks of `tokens` this cache holds and the disk lacks; the writer thread
        writes them."""
        if not plain_kv(cache) or cache[0].keys is None or cache[0].keys.shape[0] != 1:
            return
        chain = chain_keys(self.root, tokens[: min(len(tokens), cache[0].offset)])
        missing = {i: k for i, k in enumerate(chain) if k not in self.writer.pending and not self.store.has(k)}
        if chain:
            self.writer.submit(Job(snapshot(cache, missing) if missing else [], chain))

    def close(self) -> None:
        self.writer.flush()
