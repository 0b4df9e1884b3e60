"""The dashboard: its page and files (`static/`), and signing in and out."""

from mlx_fleet.router.dashboard import routes

ROUTES = [*routes.ROUTES]
