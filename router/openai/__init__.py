"""OpenAI's API: chat and text completions, embeddings and the model list."""

from mlx_fleet.router.openai import embeddings, routes

ROUTES = [*routes.ROUTES, *embeddings.ROUTES]
