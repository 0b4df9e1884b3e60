"""The wire protocol shared by router, supervisor and workers.

Every ZeroMQ message is a multipart message whose first frame is a one-byte `Kind`, then the
request id, then (optionally) routing frames, then one msgpack-encoded body. Bodies are msgspec
structs; where one kind can carry several message types they form a tagged union. Nothing is
ever pickled, and decoders are typed, so a peer can only ever send us these structs.

Two planes. The control plane goes through the supervisor: requests in, cancels, admin calls,
worker lifecycle, and one copy of each request's END (for its accounting). The data plane does
not: a worker pushes its DELTA and END frames straight to the router's sink (PUSH → PULL), so a
token crosses one process boundary between the model and the HTTP connection, not two.

Frame layouts (the socket's own identity frame, on ROUTER sockets, comes before these):

    router -> supervisor   GENERATE rid model_id body(Generate)    CANCEL rid
                           EMBED    rid model_id body(Embed)
                           COUNT    rid model_id body(Generate)
                           CALL     call_id body(Call)
    supervisor -> worker   GENERATE rid body(Generate)             CANCEL rid
                           EMBED    rid body(Embed)                COUNT rid body(Generate)
                           CONTROL  b"" body(Shutdown | Assign)
    worker -> router sink  START+rid+body(Started)  (once, when a GENERATE is accepted)
                           DELTA+rid+body(Delta)   END+rid+body(Done | Failure | Embeddings | TokenCount)
                           (one frame: kind, the 12-byte request id, the body, concatenated)
    worker -> supervisor   END rid body(...)       (the same END, for accounting)
                           CONTROL b"" body(Spare | Loading | Ready | LoadFailed | MemoryReport)
    supervisor -> router   END rid body(Failure)   (requests the supervisor itself ends)
                           REPLY call_id body(Reply)

Request ids are REQUEST_ID_BYTES long (the router makes them), so a data-plane message can be one
frame: a token then costs one ZeroMQ message part to send and to receive instead of three.

Structs are `array_like` (field order is the wire format: add new fields last); hot-path ones
are `gc=False`. Tags are only unique within a union: the kind frame picks the decoder.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec


class Kind(bytes, enum.Enum):
    """First frame of every message. Members are `bytes`, so they compare equal to received frames."""

    GENERATE = b"G"
    EMBED = b"M"
    COUNT = b"T"  # how many tokens a Generate's prompt is, generating nothing
    CANCEL = b"C"
    START = b"S"  # a generation was accepted: its prompt's size, before any token
    DELTA = b"D"
    END = b"E"
    CALL = b"Q"
    REPLY = b"R"
    CONTROL = b"K"


REQUEST_ID_BYTES = 12


def stream_frame(kind: Kind, rid: bytes, body: bytes) -> bytes:
    """A data-plane message (worker -> router sink) as its one frame."""
    return kind + rid + body


def split_stream_frame(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """(kind, request id, body) of a data-plane frame."""
    return frame[:1], frame[1:1 + REQUEST_ID_BYTES], frame[1 + REQUEST_ID_BYTES:]


class _Wire(msgspec.Struct, array_like=True, frozen=True):
    pass


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


# ---------------------------------------------------------------------------------------------
# Worker control (both directions)


class Memory(_Wire):
    """What a worker measured of itself, in bytes."""

    rss: int
    mlx_active: int = 0
    mlx_cache: int = 0
    mlx_peak: int = 0


class Loading(_Wire, tag=5):
    """The worker is up and connected, and is now importing its libraries and loading weights."""

    pid: int


class Ready(_Wire, tag=1):
    pid: int
    memory: Memory
    context_length: int
    load_seconds: float


class LoadFailed(_Wire, tag=2):
    message: str
    out_of_memory: bool = False
    traceback: str = ""  # where the load failed, for `logs?diagnose=true`


class MemoryReport(_Wire, tag=3):
    memory: Memory


class Shutdown(_Wire, tag=4):
    """Ask a worker to finish: cancel what it is doing and exit."""


class Spare(_Wire, tag=6):
    """A warm spare: connected, MLX libraries imported, waiting for `Assign`."""

    pid: int
    memory: Memory


class Assign(_Wire, tag=7):
    """Turn a warm spare into the worker of this model."""

    model_id: str
    path: str
    model_type: str
    prompt_cache_bytes: int


Control = Loading | Ready | LoadFailed | MemoryReport | Shutdown | Spare | Assign


# ---------------------------------------------------------------------------------------------
# Admin RPC (router -> supervisor -> router)


class GetStatus(_Wire, tag=1):
    pass


class LoadModel(_Wire, tag=2):
    model: str
    pin: bool = True


class UnloadModel(_Wire, tag=3):
    model: str
    force: bool = False


class Ping(_Wire, tag=4):
    """Is the supervisor there? Answered at once, with nothing computed."""


class GetCatalog(_Wire, tag=5):
    """The registry (`mlx_fleet.catalog.entry.Registry`): every model, enabled or not; with a
    tier, only that tier's enabled models, smallest first."""

    tier: str | None = None


class Rescan(_Wire, tag=6):
    pass


class SetModel(_Wire, tag=7):
    """Enable or disable a model, or set its tier (None leaves that choice as it is)."""

    model: str
    enabled: bool | None = None
    tier: str | None = None


class ResolveTier(_Wire, tag=8):
    """Which model answers a `tier:NAME` request: its id (a loaded one of the tier if any)."""

    tier: str
    embeddings: bool = False


class GetProfiles(_Wire, tag=9):
    pass


class SaveProfile(_Wire, tag=10):
    name: str
    models: tuple[str, ...]


class DeleteProfile(_Wire, tag=11):
    name: str


class ActivateProfile(_Wire, tag=12):
    name: str


class Diagnose(_Wire, tag=13):
    """What is known about a model and its last failed load (`logs?diagnose=true`)."""

    model: str


class DryRun(_Wire, tag=14):
    """What loading a model would do now, without doing it."""

    model: str


Call = (GetStatus | LoadModel | UnloadModel | Ping | GetCatalog | Rescan | SetModel | ResolveTier | GetProfiles
        | SaveProfile | DeleteProfile | ActivateProfile | Diagnose | DryRun)


class Reply(_Wire):
    """One envelope for every admin call: a failure, or a JSON-ready result (one of the structs
    below, which arrives as a plain mapping and is converted back to its type by the reader)."""

    failure: Failure | None = None
    result: Any = None


# ---------------------------------------------------------------------------------------------
# Admin replies: the JSON the admin API answers with, typed once for the supervisor that builds
# it, the router that serves it and the CLI that reads it. Mappings, not arrays (they become JSON
# objects). They are a superset of the design documents' shapes (`loaded_models`, `model_id`,
# `size_gb`, `status: "loaded"`, ...), so a client written for those reads mlx-fleet unchanged.

GB = 10**9
ModelKind = Literal["text-gen", "vision", "embeddings"]
MODEL_KINDS: dict[str, ModelKind] = {"auto": "text-gen", "text": "text-gen", "vision": "vision",
                                     "embeddings": "embeddings"}


def gigabytes(n: int | None) -> float | None:
    return None if n is None else round(n / GB, 3)


class _Json(msgspec.Struct, kw_only=True):
    pass


class ModelMemory(_Json, kw_only=True):
    measured: int | None        # footprint measured since it loaded (None: not loaded)
    estimated: int | None       # what the policy assumed before loading
    estimate_was_measured: bool
    mlx_active: int | None      # the worker's own last report
    mlx_cache: int | None


class ModelStatus(_Json, kw_only=True):
    id: str
    type: str
    state: str
    pid: int | None
    memory: ModelMemory
    preload: bool
    pinned: bool
    loaded_at: float | None
    last_used: float | None
    load_seconds: float | None
    context_length: int | None
    in_flight: int
    queued: int
    served: int
    tokens_generated: int
    ttl_remaining: float | None
    last_error: str | None
    last_error_out_of_memory: bool    # the last load failed for want of memory (LoadFailed.out_of_memory)
    # Since the server started: successful loads and their seconds, failed loads, evictions to make
    # room or to get back under the budget, and crashes (a loaded worker that died or hung).
    loads: int = 0
    load_seconds_total: float = 0.0
    load_failures: int = 0
    evictions: int = 0
    crashes: int = 0
    # The design documents' names.
    model_id: str
    model_type: ModelKind
    size_gb: float | None             # measured, else estimated, while it has a process
    preloaded: bool                   # pinned: preloaded or loaded by an administrator
    # The catalog's view: the model's tier, and where it came from ("config", "scan", "hf_cache").
    tier: str | None = None
    source: str | None = None


class LoadResult(ModelStatus, kw_only=True):
    """`POST /admin/models/load/{id}`: the model's status once it is ready."""

    status: Literal["loaded"] = "loaded"


class UnloadResult(_Json, kw_only=True):
    """`POST /admin/models/unload/{id}`: how the worker ended and what that gave back."""

    status: Literal["unloaded"] = "unloaded"
    model_id: str
    model: str
    action: Literal["drained", "forced"]
    memory_released: int
    seconds: float
    state: str


class SpareStatus(_Json, kw_only=True):
    pid: int | None
    state: Literal["starting", "ready"]
    memory: int


class PoolStatus(_Json, kw_only=True):
    policy: str
    budget: int
    in_use: int
    available: int
    max_models: int
    loaded: int
    machine_total: int
    machine_available: int
    accepting: bool
    spare: SpareStatus | None         # the first of `spares` (the one the next load takes)
    spares: list[SpareStatus]
    spares_wanted: int                # memory.spares


class MemoryTotals(_Json, kw_only=True):
    active_gb: float                  # the workers' MLX active memory, summed
    cache_gb: float                   # the workers' MLX cache memory, summed


class FleetStatus(_Json, kw_only=True):
    """`GET /admin/models/status`."""

    models: list[ModelStatus]         # every configured model, loaded or not
    pool: PoolStatus
    loaded_models: list[ModelStatus]  # those with a worker process
    total_models: int                 # how many are loaded
    memory: MemoryTotals
    max_memory_gb: float              # the budget
    max_models: int


class FailedLoad(_Json, kw_only=True):
    at: float                         # unix time
    reason: str
    traceback: str                    # the worker's, or the last lines of its output
    out_of_memory: bool


class Diagnosis(_Json, kw_only=True):
    """`GET /admin/models/{id}/logs?diagnose=true`: the model as the supervisor sees it."""

    model_id: str
    state: str
    detected_type: str                # from its config.json (or as configured)
    estimate_bytes: int
    estimate_was_measured: bool
    config: dict[str, Any]            # its [[models]] entry, resolved
    last_failed_load: FailedLoad | None


class DryRunWarning(_Json, kw_only=True):
    severity: Literal["info", "warning", "error"]
    category: Literal["memory", "download", "architecture", "state"]
    title: str
    message: str


class DryRunResult(_Json, kw_only=True):
    """`POST /admin/models/{id}/dry-run`: what a load would do now; nothing is loaded or evicted."""

    model_id: str
    type: str
    state: str
    estimate_bytes: int
    estimate_was_measured: bool
    vram_estimate_gb: float
    budget_bytes: int
    in_use_bytes: int
    fits_now: bool                    # loads without evicting anything (or is loaded already)
    fits: bool                        # loads, after the evictions below
    would_evict: list[str]            # idle models that would be ended, least recently used first
    would_drain: list[str]            # busy models that would finish their requests, then end
    warnings: list[DryRunWarning]


class HealthStatus(_Json, kw_only=True):
    """`GET /admin/health`."""

    status: Literal["healthy", "degraded", "unavailable"]
    supervisor: Literal["ok", "unreachable"]
    workers: dict[str, str]
    reason: str | None = None


# ---------------------------------------------------------------------------------------------
# Codecs: one encoder and one decoder per body type, built once and reused.

encoder = msgspec.msgpack.Encoder()
encode = encoder.encode

decode_generate = msgspec.msgpack.Decoder(Generate).decode
decode_embed = msgspec.msgpack.Decoder(Embed).decode
decode_started = msgspec.msgpack.Decoder(Started).decode
decode_delta = msgspec.msgpack.Decoder(Delta).decode
decode_end = msgspec.msgpack.Decoder(End).decode
decode_control = msgspec.msgpack.Decoder(Control).decode
decode_call = msgspec.msgpack.Decoder(Call).decode
decode_reply = msgspec.msgpack.Decoder(Reply).decode

# The longest message any peer may send (images included); ZeroMQ drops bigger ones unread.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
