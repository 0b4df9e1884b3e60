"""The prompt cache's disk tier, its parts alone: key chains, block files, the LRU bound, and a
round trip of KV through blocks."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from mlx_fleet.worker.prompt_store.block_file import Block, decode, encode
from mlx_fleet.worker.prompt_store.identity import BLOCK_TOKENS, chain_keys, identity
from mlx_fleet.worker.prompt_store.kv_blocks import rebuild, snapshot
from mlx_fleet.worker.prompt_store.store import BlockStore

SHAPE = (1, 2, BLOCK_TOKENS, 4)
ROOT = identity("model-a", "mlx.core.bfloat16", 2, SHAPE, SHAPE)


def block(key: str, payload: bytes = b"\1" * 64) -> Block:
    return Block(key, "mlx.core.bfloat16", 2, SHAPE, SHAPE, payload)


def test_a_shared_prefix_has_the_same_keys_and_a_partial_block_none() -> None:
    prompt = list(range(3 * BLOCK_TOKENS + 10))
    keys = chain_keys(ROOT, prompt)
    assert len(keys) == 3 and len(set(keys)) == 3
    assert chain_keys(ROOT, prompt[: 2 * BLOCK_TOKENS]) == keys[:2]
    changed = [*prompt[:BLOCK_TOKENS], 7, *prompt[BLOCK_TOKENS + 1:]]
    assert chain_keys(ROOT, changed)[0] == keys[0] and chain_keys(ROOT, changed)[1:] != keys[1:]
    assert chain_keys(ROOT, changed)[2] != keys[2]  # a block's key depends on every block before it


def test_another_model_identity_never_shares_a_key() -> None:
    prompt = list(range(BLOCK_TOKENS))
    others = [identity("model-b", "mlx.core.bfloat16", 2, SHAPE, SHAPE),
              identity("model-a", "mlx.core.float16", 2, SHAPE, SHAPE),
              identity("model-a", "mlx.core.bfloat16", 3, SHAPE, SHAPE),
              identity("model-a", "mlx.core.bfloat16", 2, (1, 4, BLOCK_TOKENS, 2), SHAPE)]
    assert len({chain_keys(root, prompt)[0] for root in [ROOT, *others]}) == 5


def test_a_block_file_round_trips_and_rejects_any_damage() -> None:
    data = encode(block("ab" * 32))
    assert decode(data, "ab" * 32) == block("ab" * 32)
    assert decode(data, "cd" * 32) is None                # another key's file
    assert decode(data[:-1], "ab" * 32) is None           # cut short
    assert decode(data[:20], "ab" * 32) is None           # cut inside the header
    flipped = data[:-1] + bytes([data[-1] ^ 1])
    assert decode(flipped, "ab" * 32) is None             # one bit changed


def test_a_file_cut_mid_write_is_a_miss_and_is_deleted(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, ROOT.hex(), 2**30)
    good, cut = "aa" * 32, "bb" * 32
    store.write(block(good))
    store.path(cut).parent.mkdir(parents=True, exist_ok=True)
    store.path(cut).write_bytes(encode(block(cut))[:-10])  # a crash (or power loss) mid-write
    left = store.path(good).with_name(".tmp-1-" + "cc" * 32)
    left.write_bytes(encode(block("cc" * 32))[:30])        # a writer killed before its rename
    assert store.read(good) == block(good)
    assert store.has(cut) and store.read(cut) is None and not store.has(cut)
    assert not store.has("cc" * 32) and store.read("cc" * 32) is None


def test_the_bound_evicts_least_recently_used_leaves_first(tmp_path: Path) -> None:
    size = len(encode(block("00" * 32)))
    store = BlockStore(tmp_path, ROOT.hex(), 3 * size)
    other = BlockStore(tmp_path, identity("model-b", "x", 1, SHAPE, SHAPE).hex(), 3 * size)
    chain = ["%02x" % i * 32 for i in range(3)]
    for key in chain:
        store.write(block(key))
    store.touch(chain)
    stamp = os.stat(store.path(chain[0])).st_mtime_ns
    assert stamp > os.stat(store.path(chain[2])).st_mtime_ns  # the chain's root is the most recent
    other.write(block("ff" * 32))  # another model's block shares the bound
    assert store.evict() == size
    assert [store.has(k) for k in chain] == [True, True, False] and other.has("ff" * 32)


def test_kv_blocks_round_trip_exactly() -> None:
    layers = []
    for seed in range(3):
        c = KVCache()
        keys = mx.random.normal((1, 2, 2 * BLOCK_TOKENS + 44, 8), key=mx.random.key(seed)).astype(mx.bfloat16)
        c.update_and_fetch(keys, keys * 2)
        layers.append(c)
    blocks = snapshot(layers, {0: "00" * 32, 1: "11" * 32})
    files = [decode(encode(b), b.key) for b in blocks]
    restored = rebuild(files)
    assert len(restored) == 3 and all(c.offset == 2 * BLOCK_TOKENS for c in restored)
    for before, after in zip(layers, restored):
        assert after.keys.dtype == mx.bfloat16
        assert mx.array_equal(after.keys, before.keys[..., : 2 * BLOCK_TOKENS, :]).item()
        assert mx.array_equal(after.values, before.values[..., : 2 * BLOCK_TOKENS, :]).item()
