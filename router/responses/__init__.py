"""OpenAI's Responses API (`POST /v1/responses`), stateless."""

from mlx_fleet.router.responses import routes

ROUTES = [*routes.ROUTES]
