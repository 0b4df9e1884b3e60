"""Where the fleet's processes meet: ZeroMQ endpoints in a private runtime directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class Endpoints:
    """`ipc://` sockets inside a directory only this user can enter (mode 0700)."""

    def __init__(self, runtime_dir: Path) -> None:
        self.dir = runtime_dir
        self.frontend = f"ipc://{runtime_dir}/supervisor.sock"
        self.backend = f"ipc://{runtime_dir}/workers.sock"
        # The data plane: workers push their stream frames straight to the router here.
        self.sink = f"ipc://{runtime_dir}/router-sink.sock"


def make_runtime_dir() -> Path:
    # /tmp rather than a long $TMPDIR: an ipc:// path must fit in a sun_path (about 100 bytes).
    base = "/tmp" if os.path.isdir("/tmp") else None
    path = Path(tempfile.mkdtemp(prefix="mlx-fleet-", dir=base))
    os.chmod(path, 0o700)
    return path


def remove_runtime_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
