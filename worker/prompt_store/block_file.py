"""One block's file: a magic line, a small JSON header, then every layer's K and V bytes.

A file cut short (a crash, a power loss: on macOS `fsync` does not reach the media) or changed
fails its size or checksum check and reads as a miss; the store then deletes it.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"MLXFKV1\n"
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Block:
    """A block's KV, as bytes: for each layer its keys then its values, each `[1, heads, tokens, dim]`."""

    key: str
    dtype: str
    layers: int
    key_shape: tuple[int, ...]
    value_shape: tuple[int, ...]
    payload: bytes


def encode(block: Block) -> bytes:
    header = json.dumps({
        "key": block.key, "dtype": block.dtype, "layers": block.layers,
        "key_shape": list(block.key_shape), "value_shape": list(block.value_shape),
        "size": len(block.payload), "crc32": zlib.crc32(block.payload),
    }).encode()
    return MAGIC + _LENGTH.pack(len(header)) + header + block.payload


def decode(data: bytes, key: str) -> Block | None:
    """The block in `data`, or None if it is not a whole, unchanged block with this key."""
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start or not data.startswith(MAGIC):
        return None
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(data[start:start + length])
        payload = data[start + length:]
        if (header["key"] != key or header["size"] != len(payload)
                or header["crc32"] != zlib.crc32(payload)):
            return None
        return Block(key, header["dtype"], header["layers"], tuple(header["key_shape"]),
                     tuple(header["value_shape"]), payload)
    except (ValueError, KeyError, TypeError):
        return None
