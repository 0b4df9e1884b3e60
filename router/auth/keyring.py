"""A set of keys held as digests, compared in constant time: both sides are hashed, and every key
is compared, whatever the first comparison gave."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [key_digest(k) for k in keys if k]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def holds(self, key: str) -> bool:
        candidate = key_digest(key)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return found
