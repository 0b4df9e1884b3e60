"""Each model's worker output in a file of its own under the state directory, size-bounded.

The supervisor writes every line a worker prints (`WorkerLogs.write`, rotating at `max_bytes`
with `backups` older files kept); the router reads them back for `/admin/models/{id}/logs`
(`tail`, `read_after`) straight from the files, so reading a log costs the supervisor nothing.
Lines from warm spares, which belong to no model yet, go to `_spares.log`.
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import re
import time
from collections import deque
from pathlib import Path

MAX_BYTES = 2 * 2**20
BACKUPS = 2
SPARES = "_spares"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def logs_dir(state_dir: Path) -> Path:
    return state_dir.expanduser() / "logs"


def log_path(directory: Path, model_id: str) -> Path:
    """`logs/<id>.log`; an id with characters unfit for a file name (`/`, `:`) gets them replaced and
    a short hash of the id added, so two ids never share a file."""
    safe = _UNSAFE.sub("_", model_id)
    if safe != model_id:
        safe += "-" + hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return directory / f"{safe}.log"


class WorkerLogs:
    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.directory, self.max_bytes, self.backups = directory, max_bytes, backups
        self._handlers: dict[str, logging.handlers.RotatingFileHandler] = {}
        self._format = logging.Formatter("%(asctime)s %(message)s")

    def write(self, model_id: str, line: str) -> None:
        handler = self._handlers.get(model_id)
        if handler is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(log_path(self.directory, model_id), maxBytes=self.max_bytes,
                                                           backupCount=self.backups, encoding="utf-8")
            handler.setFormatter(self._format)
            self._handlers[model_id] = handler
        handler.emit(logging.makeLogRecord({"msg": line, "created": time.time()}))

    def close(self) -> None:
        for handler in self._handlers.values():
            handler.close()
        self._handlers.clear()


def tail(directory: Path, model_id: str, n: int) -> tuple[list[str], int]:
    """The last `n` lines (reaching into the rotated files if the current one is short), and the
    current file's size, from which `read_after` continues."""
    path = log_path(directory, model_id)
    rotated = []
    while (older := path.with_name(f"{path.name}.{len(rotated) + 1}")).exists():
        rotated.append(older)
    lines: deque[str] = deque(maxlen=n)
    for p in (*reversed(rotated), path):
        if p.exists():
            with p.open(encoding="utf-8", errors="replace") as f:
                lines.extend(line.rstrip("\n") for line in f)
    return list(lines), path.stat().st_size if path.exists() else 0


def read_after(directory: Path, model_id: str, offset: int, limit: int) -> tuple[list[str], int]:
    """Lines written since `offset` (a size `tail` or this returned); from the start of the file
    if it was rotated since (it is smaller than `offset`). At most `limit` lines."""
    path = log_path(directory, model_id)
    if not path.exists():
        return [], 0
    with path.open("rb") as f:
        size = f.seek(0, 2)
        position = offset if offset <= size else 0
        f.seek(position)
        lines: list[str] = []
        while len(lines) < limit:
            line = f.readline()
            if not line.endswith(b"\n"):  # the end, or a line still being written: next time
                break
            lines.append(line.decode("utf-8", errors="replace").rstrip("\n"))
            position += len(line)
    return lines, position
