"""Start the peer, `mlx_lm.server`, at its best: listen backlog raised, OpenBLAS loaded.

    python tests/bench/peer_server.py [mlx_lm.server options...]

mlx-lm 0.32.2 serves HTTP with `http.server.ThreadingHTTPServer` (it is the default
`server_class` of `mlx_lm.server._run_http_server`), whose listen backlog is
`socketserver.TCPServer.request_queue_size` = 5: a burst of more connections than that is
reset by the kernel (notes/gpu.md). Setting the class attribute before the server is built
raises it for this process only (BENCH_PEER_BACKLOG, default 256). OpenBLAS is loaded before
MLX, as the fleet's worker does, so both servers multiply with the same BLAS on a Linux CPU.
"""

from __future__ import annotations

import http.server
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mlx_fleet.worker.blas import preload_blas  # noqa: E402  (imports nothing from MLX)

preload_blas()
http.server.ThreadingHTTPServer.request_queue_size = int(os.environ.get("BENCH_PEER_BACKLOG", "256"))

from mlx_lm.server import main  # noqa: E402

if __name__ == "__main__":
    sys.argv = ["mlx_lm.server", *sys.argv[1:]]
    main()
