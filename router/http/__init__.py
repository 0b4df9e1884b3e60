"""What every API's routes share: errors in each API's envelope, body decoding, OpenAPI
documentation (and `/openapi.json`), shared field types, server-sent events, admission control
and usage recording."""

from mlx_fleet.router.http import openapi

ROUTES = [*openapi.ROUTES]
