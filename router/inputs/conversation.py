"""A conversation from any of the APIs (chat, Responses, Anthropic Messages) as the worker's `ChatInput`.

Each API spells messages and images its own way; each API's adapter turns its request into `Turn`s, and
this module applies the one image policy to all of them: only a vision model takes images, at
most `max_images` per request, every image fetched and decoded here (never in a worker).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import ImageData, Message, ToolCall
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.inputs.images import ImagePolicy, load_image


@dataclass(slots=True)
class Turn:
    """One message: a chat template role, its text, and its images as (url, the request param
    that holds the url), in order; an assistant's calls, or the call a tool message answers."""

    role: str
    text: str = ""
    images: list[tuple[str, str]] = field(default_factory=list)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


async def chat_messages(turns: list[Turn], model: ModelConfig, policy: ImagePolicy, max_images: int,
                        param: str, what: str) -> tuple[Message, ...]:
    """`param` names the request's list of messages, for an error about all of them; `what` names
    the API, for a model that cannot answer it."""
    if model.type == "embeddings":
        raise ApiError(400, f"Model '{model.id}' does not support {what}.", param="model", code="model_not_supported")
    refs = [(i, url, where) for i, turn in enumerate(turns) for url, where in turn.images]
    if refs and model.type != "vision":
        raise ApiError(400, f"Model '{model.id}' does not accept image input.", param=refs[0][2],
                       code="model_not_supported")
    if len(refs) > max_images:
        raise ApiError(400, f"Too many images: {len(refs)}; the limit is {max_images} per request.",
                       param=param, code="too_many_images")
    loaded = await asyncio.gather(*(load_image(url, where, policy) for _, url, where in refs))
    by_turn: dict[int, list[ImageData]] = {}
    for (i, _, _), image in zip(refs, loaded):
        by_turn.setdefault(i, []).append(image)
    return tuple(Message(t.role, t.text, tuple(by_turn.get(i, ())), t.tool_calls, t.tool_call_id, t.name)
                 for i, t in enumerate(turns))
