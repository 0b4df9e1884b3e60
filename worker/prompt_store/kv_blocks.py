"""A layer list's KV in and out of blocks, on the engine's thread (the only MLX in this package).

Snapshot: each block's slice of every layer is copied (`mx.contiguous`, or the view would pin the
whole step buffer), evaluated, and its bytes taken out through an unsigned view (bf16 has no
buffer format). Rebuild: the blocks' bytes become arrays again, concatenated along the tokens'
axis into a fresh `KVCache` per layer, with its offset at the restored length.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache

from mlx_fleet.worker.prompt_store.block_file import Block
from mlx_fleet.worker.prompt_store.identity import BLOCK_TOKENS

DTYPES = {str(d): d for d in (mx.bfloat16, mx.float16, mx.float32)}  # the KV dtypes blocks hold, by name
_RAW = {2: (mx.uint16, np.uint16), 4: (mx.uint32, np.uint32)}


def plain_kv(cache: list) -> bool:
    """Whether every layer is a plain `KVCache`, the only kind sliced into blocks here."""
    return bool(cache) and all(type(c) is KVCache for c in cache)


def snapshot(cache: list[KVCache], keys: dict[int, str]) -> list[Block]:
    """The blocks `keys` names (block index → key), as bytes."""
    parts = {i: _slices(cache, i) for i in keys}
    mx.eval([a for arrays in parts.values() for a in arrays])
    first = cache[0]
    return [Block(key, str(first.keys.dtype), len(cache), _block_shape(first.keys), _block_shape(first.values),
                  b"".join(memoryview(a) for a in parts[i]))
            for i, key in keys.items()]


def _slices(cache: list[KVCache], index: int) -> list[mx.array]:
    start, end = index * BLOCK_TOKENS, (index + 1) * BLOCK_TOKENS
    raw = _RAW[cache[0].keys.dtype.size][0]
    return [mx.contiguous(buffer[..., start:end, :]).view(raw) for c in cache for buffer in (c.keys, c.values)]


def _block_shape(buffer: mx.array) -> tuple[int, ...]:
    b, heads, _, dim = buffer.shape
    return (b, heads, BLOCK_TOKENS, dim)


def rebuild(blocks: list[Block]) -> list[KVCache]:
    """One `KVCache` per layer holding the blocks' tokens, in order."""
    first = blocks[0]
    dtype = DTYPES[first.dtype]
    raw_mx, raw_np = _RAW[dtype.size]
    layers: list[tuple[list[mx.array], list[mx.array]]] = [([], []) for _ in range(first.layers)]
    for block in blocks:
        flat = np.frombuffer(block.payload, dtype=raw_np)
        k_size, v_size = int(np.prod(block.key_shape)), int(np.prod(block.value_shape))
        at = 0
        for ks, vs in layers:
            ks.append(mx.array(flat[at:at + k_size].reshape(block.key_shape)).view(dtype))
            vs.append(mx.array(flat[at + k_size:at + k_size + v_size].reshape(block.value_shape)).view(dtype))
            at += k_size + v_size
    caches = []
    for ks, vs in layers:
        c = KVCache()
        c.state = (mx.concatenate(ks, axis=2), mx.concatenate(vs, axis=2), len(blocks) * BLOCK_TOKENS)
        caches.append(c)
    mx.eval([a for c in caches for a in (c.keys, c.values)])
    return caches
