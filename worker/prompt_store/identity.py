"""What a block's KV depends on besides its tokens, hashed into every key: a changed model,
dtype, shape or library never reads another's KV, it simply misses."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import mlx_lm

FORMAT_VERSION = 1
BLOCK_TOKENS = 256  # = KVCache.step: a block is one step of the cache's buffer
_HEADER_MAX = 100 * 2**20


def model_fingerprint(model_dir: Path) -> str:
    """A hash of the model's config, tokenizer config, weights index and every safetensors file's
    name, size and header (tensor names, dtypes, shapes, offsets): cheap to read, and it changes
    with the weights."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json", "tokenizer_config.json"):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0" + str(path.stat().st_size).encode() + b"\0" + _header(path))
    return digest.hexdigest()


def _header(path: Path) -> bytes:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8) or bytes(8))
        return f.read(min(length, _HEADER_MAX))


def identity(fingerprint: str, dtype: str, layers: int, key_shape: tuple[int, ...],
             value_shape: tuple[int, ...]) -> bytes:
    """The root every key chain starts from (a per-token-count-free description of one block)."""
    described = json.dumps({
        "format": FORMAT_VERSION, "mlx_lm": mlx_lm.__version__, "model": fingerprint, "dtype": dtype,
        "layers": layers, "key_shape": list(key_shape), "value_shape": list(value_shape), "block": BLOCK_TOKENS,
    }, sort_keys=True)
    return hashlib.sha256(described.encode()).digest()


def chain_keys(root: bytes, tokens: list[int]) -> list[str]:
    """One key per whole block of `tokens`: sha256(identity ‖ parent key ‖ the block's int32 tokens)."""
    keys: list[str] = []
    parent = b""
    for start in range(0, len(tokens) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
        block = struct.pack(f"<{BLOCK_TOKENS}i", *tokens[start:start + BLOCK_TOKENS])
        parent = hashlib.sha256(root + parent + block).digest()
        keys.append(parent.hex())
    return keys
