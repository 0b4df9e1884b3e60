"""Generation: what a request asks of a worker, and the events a worker streams back."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from mlx_fleet.protocol.frames import _Wire

__all__ = ["Sampling", "ImageData", "ToolCall", "Message", "Tool", "ToolChoice", "ChatInput", "TextInput", "TokensInput", "Input", "ResponseFormat", "Generate", "Embed", "TokenLogprob", "ToolCallDelta", "Started", "Delta", "Usage", "FinishReason", "Done", "Failure", "Embeddings", "TokenCount", "End"]


# ---------------------------------------------------------------------------------------------
# Generation requests (router -> supervisor -> worker)


class Sampling(_Wire, gc=False):
    """Sampling and stopping parameters, already validated and defaulted by the router."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # The worker may shorten max_tokens to what fits in the context: the client gave no limit,
    # or gave it as a ceiling (Anthropic's API, whose clients ask for more than most contexts hold).
    max_tokens_is_default: bool = False


class ImageData(_Wire):
    """A decoded image: RGB pixels, so a worker never opens a file or URL from a request string."""

    width: int
    height: int
    rgb: bytes


class ToolCall(_Wire, gc=False):
    """A function call the assistant made earlier in a conversation. `arguments` is JSON text."""

    id: str
    name: str
    arguments: str


class Message(_Wire):
    """One chat message; images belong to the message they appeared in, in order. An assistant
    message may carry the calls it made; a tool message answers the call `tool_call_id`."""

    role: str
    content: str
    images: tuple[ImageData, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


class Tool(_Wire):
    """A function the model may call; `parameters_json` is its JSON schema, as text."""

    name: str
    description: str = ""
    parameters_json: str = ""


class ToolChoice(_Wire):
    """`auto`: the model decides; `none`: no tools offered; `required`: some call, and `function`:
    a call of `name`, both guaranteed by constrained decoding."""

    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str = ""


class ChatInput(_Wire, tag=1):
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    # Extra arguments for the model's chat template (`enable_thinking`, `reasoning_effort`, ...).
    template_kwargs: dict[str, Any] = msgspec.field(default_factory=dict)


class TextInput(_Wire, tag=2):
    prompt: str


class TokensInput(_Wire, tag=3):
    tokens: tuple[int, ...]


Input = ChatInput | TextInput | TokensInput


class ResponseFormat(_Wire):
    """A constraint on the reply's text, enforced by constrained decoding (never ignored)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema_json: str = ""  # json_schema: the schema, as text
    name: str = ""
    strict: bool = False


class Generate(_Wire):
    """Body of a GENERATE message. `logprobs`: None for none, else the sampled token's log
    probability and that many alternatives (0-20) with each token."""

    input: Input
    sampling: Sampling
    response_format: ResponseFormat | None = None
    logprobs: int | None = None


class Embed(_Wire):
    """Body of an EMBED message: texts, or already-tokenized inputs (exactly one is non-empty)."""

    texts: tuple[str, ...] = ()
    tokens: tuple[tuple[int, ...], ...] = ()


# ---------------------------------------------------------------------------------------------
# Stream events (worker -> supervisor -> router)


class TokenLogprob(_Wire, gc=False):
    """One generated token's log probability, and the most likely alternatives at its position."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


class ToolCallDelta(_Wire, gc=False):
    """A piece of the tool call numbered `index` in this reply (0, 1, ... in the order the model
    makes them). A call's pieces arrive in order: its first carries `id` and `name` (the call's
    start), each carries the next text of its `arguments` (possibly none), and its last has `done`
    (the arguments are whole). A call the worker cannot stream is one piece with all of these.
    The arguments' pieces concatenate to JSON text, exactly what a non-streamed reply carries."""

    index: int
    arguments: str = ""
    id: str = ""
    name: str = ""
    done: bool = False


class Started(_Wire):
    """A generation was accepted: the size of its prompt, as tokenized for the model, and how much
    of it came from the prompt cache. Sent once, before any Delta, so a stream can report the
    prompt in its opening event (Anthropic's `message_start`) and no token carries it."""

    prompt_tokens: int
    cached_tokens: int = 0


class Delta(_Wire, gc=False):
    """What one request produced since its last Delta, whatever API the client speaks: answer
    text, thinking text, pieces of tool calls, and per-token log probabilities when asked (a plain
    token leaves them empty: three bytes). `tokens` counts the tokens it covers."""

    text: str
    tokens: int = 1
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


class Usage(_Wire, gc=False):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


class Done(_Wire, tag=1, gc=False):
    """The request finished normally."""

    finish_reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None  # the stop string that ended it, if one did


class Failure(_Wire, tag=2):
    """The request failed. `status` and `code` become the OpenAI error envelope as they are."""

    code: str
    message: str
    status: int = 500
    param: str | None = None
    retry_after: float | None = None


class Embeddings(_Wire, tag=3):
    """The answer to an Embed: `count` vectors of `dim` float32s, little-endian, row after row
    (exactly OpenAI's base64 layout), and the real (unpadded) token count of each input."""

    dim: int
    vectors: bytes
    token_counts: tuple[int, ...]


class TokenCount(_Wire, tag=4):
    """The answer to a COUNT: the prompt's length, tokenized exactly as a generation would be."""

    input_tokens: int


End = Done | Failure | Embeddings | TokenCount
