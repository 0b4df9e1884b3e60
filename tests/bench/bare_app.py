"""The router benchmark's baseline: a bare Litestar app on the same uvicorn settings as the fleet.

    python tests/bench/bare_app.py --port PORT --models-json FILE

It answers `GET /v1/models` with the bytes in FILE (the benchmark copies the fleet's own answer
there, so both send the same body) and `GET /health` with `{"status":"ok"}`, both constant:
no guard, no host check, no supervisor round trip. uvicorn runs as `mlx-fleet serve` runs it
(`mlx_fleet/cli.py`): loopback, log level info, no access log, the same backlog, lifespan on.
What separates the fleet's requests/s from this app's is then the fleet's own per-request work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from litestar import Litestar, Response, get


def make_app(models_body: bytes) -> Litestar:
    @get("/v1/models")
    async def list_models() -> Response:
        return Response(models_body, media_type="application/json")

    @get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Litestar(route_handlers=[list_models, health], openapi_config=None)


def main() -> None:
    p = argparse.ArgumentParser(prog="bare_app.py")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--models-json", type=Path, required=True)
    p.add_argument("--backlog", type=int, default=2048)
    args = p.parse_args()
    app = make_app(args.models_json.read_bytes())
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="info", access_log=False,
                                  backlog=args.backlog, lifespan="on")).run()


if __name__ == "__main__":
    main()
