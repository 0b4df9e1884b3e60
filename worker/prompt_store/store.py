"""Block files on disk: `<dir>/<identity[:16]>/<key[:2]>/<key>`, written atomically, read with
validation, evicted least-recently-used over the byte bound of the whole folder.

Every worker of the fleet shares the folder and its bound, so eviction scans it all, every model's
blocks included. A file's mtime is its last use: reading a chain touches it from its last block to
its first, so a parent is never older than its children and eviction takes leaves first.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from mlx_fleet.worker.prompt_store.block_file import Block, decode, encode

log = logging.getLogger(__name__)
TEMP_PREFIX = ".tmp-"


class BlockStore:
    def __init__(self, root: Path, identity: str, max_bytes: int) -> None:
        self.root = root
        self.folder = root / identity[:16]
        self.max_bytes = max_bytes

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / key

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def read(self, key: str) -> Block | None:
        """The block, or None when it is missing or bad (a bad file is deleted)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        block = decode(data, key)
        if block is None:
            log.warning("prompt cache: dropping a damaged block file %s", path)
            path.unlink(missing_ok=True)
        return block

    def write(self, block: Block) -> None:
        """Write to a temporary name, then rename: a crash leaves either the whole file or none."""
        path = self.path(block.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{block.key}")
        temp.write_bytes(encode(block))
        os.replace(temp, path)

    def touch(self, keys: list[str]) -> None:
        """Mark a chain used now, its first block the most recent (see the module's docstring)."""
        now = time.time_ns()
        for i, key in enumerate(keys):
            stamp = now + len(keys) - i
            try:
                os.utime(self.path(key), ns=(stamp, stamp))
            except OSError:
                pass

    def evict(self) -> int:
        """Delete least recently used files until the whole folder fits its bound; the bytes freed."""
        files = list(_files(self.root))
        total = sum(size for _, size, _ in files)
        freed = 0
        for _, size, path in sorted(files):
            if total - freed <= self.max_bytes:
                break
            try:
                path.unlink()
                freed += size
            except OSError:
                pass
        return freed


def _files(root: Path):
    """(mtime, size, path) of every file under root's `<identity>/<xx>/` folders."""
    for model in _dirs(root):
        for shard in _dirs(model):
            with os.scandir(shard) as entries:
                for entry in entries:
                    try:
                        stat = entry.stat()
                    except OSError:
                        continue
                    yield stat.st_mtime_ns, stat.st_size, Path(entry.path)


def _dirs(folder: Path):
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.is_dir()]
    except OSError:
        return []
