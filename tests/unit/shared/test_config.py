"""Unit tests for `mlx_fleet.config`: strict TOML parsing, environment overrides, validation."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import psutil
import pytest

from mlx_fleet.state import keys
from mlx_fleet.catalog.catalog import Catalog
from mlx_fleet.config import (
    ConfigError,
    FleetConfig,
    MemoryConfig,
    ModelConfig,
    PromptCacheConfig,
    ServerConfig,
    default_models,
    is_loopback,
    decode_config,
    encode_config,
    load_config,
    prompt_cache_dir,
)
from mlx_fleet.state.keys import exposure_problem
from mlx_fleet.units import ByteSize, Duration, MemoryBudget

# The example from the architecture notes, verbatim (comments included).
EXAMPLE = """\
[server]
host = "127.0.0.1"
port = 8000
api_keys = []            # Bearer keys for /v1/*; empty = no auth (loopback only)
admin_key = ""           # Bearer key for /admin/*

[memory]
policy = "lru"           # "lru": load on demand, evict least recently used
                         # "preload": serve only the preloaded models, never load on demand
budget = "75%"           # of physical memory, or an absolute size such as "48GiB"
max_models = 4
idle_ttl = "30m"         # unload an idle, unpinned worker after this; "0" = never

[[models]]
id = "smollm2"           # the name clients send as "model"
path = "mlx-community/SmolLM2-135M-Instruct"   # local directory or Hugging Face repo id
type = "auto"            # "text" | "vision" | "embeddings"; auto = detect from config.json
preload = false          # load at startup and pin (never evicted by LRU or TTL)
aliases = []
"""

MODEL = '[[models]]\nid = "m"\npath = "mlx-community/m"\n'


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> FleetConfig:
    return load_config(write(tmp_path, text), environ=environ or {})


def refused(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Parsing the documented example


def test_example_config_parses(tmp_path):
    config = load(tmp_path, EXAMPLE)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8000
    assert config.server.api_keys == []
    assert config.server.admin_key == ""
    assert config.memory.policy == "lru"
    assert config.memory.budget == MemoryBudget("75%")
    assert config.memory.max_models == 4
    assert config.memory.idle_ttl == 1800.0
    assert config.memory.spares == 1
    assert len(config.models) == 1
    model = config.models[0]
    assert model.id == "smollm2"
    assert model.path == "mlx-community/SmolLM2-135M-Instruct"
    assert model.type == "text"  # "auto" is resolved at load: a repo id not in the cache reads as text
    assert model.preload is False
    assert model.aliases == []
    assert model.idle_ttl is None


def test_values_other_than_defaults_are_read(tmp_path):
    config = load(tmp_path, """
[server]
port = 8123
api_keys = ["k1"]
admin_key = "adm"
default_max_tokens = 64
load_timeout = "90s"
[memory]
policy = "preload"
budget = "48GiB"
max_models = 2
idle_ttl = "0"
[[models]]
id = "a"
path = "org/a"
type = "vision"
preload = true
aliases = ["alpha", "A1"]
idle_ttl = "5m"
[[models]]
id = "b"
path = "org/b"
type = "embeddings"
""")
    assert config.server.port == 8123
    assert config.server.api_keys == ["k1"]
    assert config.server.admin_key == "adm"
    assert config.server.default_max_tokens == 64
    assert config.server.load_timeout == 90.0
    assert (config.memory.policy, config.memory.budget.size, config.memory.max_models) == ("preload", 48 * 2**30, 2)
    assert config.memory.idle_ttl == 0.0
    assert [m.id for m in config.models] == ["a", "b"]
    assert config.models[0].type == "vision" and config.models[0].preload is True
    assert config.models[0].aliases == ["alpha", "A1"]
    assert config.models[0].idle_ttl == 300.0
    assert config.models[1].type == "embeddings" and config.models[1].preload is False


def test_invalid_toml_is_refused_with_file_name(tmp_path):
    message = refused(tmp_path, "[server\nport = 1\n")
    assert message.startswith(f"{tmp_path / 'fleet.toml'}: ")
    assert "not valid TOML" in message


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml", environ={})


def test_file_without_models_is_refused(tmp_path):
    message = refused(tmp_path, "[server]\nport = 8001\n")
    assert "models" in message and "at least one" in message


# ---------------------------------------------------------------------------------------------
# Unknown keys and wrong types


def test_unknown_server_key_names_file_and_dotted_key(tmp_path):
    message = refused(tmp_path, "[server]\nprot = 9000\n" + MODEL)
    assert message == f"{tmp_path / 'fleet.toml'}: server.prot: unknown key"


def test_unknown_memory_key_is_refused(tmp_path):
    message = refused(tmp_path, '[memory]\nbudgett = "1GiB"\n' + MODEL)
    assert message.endswith("fleet.toml: memory.budgett: unknown key")


def test_the_prompt_cache_moved_out_of_memory_and_its_keys_are_checked(tmp_path):
    assert refused(tmp_path, '[memory]\nprompt_cache = "1GiB"\n' + MODEL).endswith("memory.prompt_cache: unknown key")
    assert refused(tmp_path, '[prompt_cache]\nsize = "1GiB"\n' + MODEL).endswith("prompt_cache.size: unknown key")


def test_the_prompt_cache_folder_defaults_to_the_state_dir(tmp_path):
    config = load(tmp_path, f'[server]\nstate_dir = "{tmp_path}/state"\n' + MODEL)
    assert prompt_cache_dir(config) == tmp_path / "state" / "prompt-cache"


def test_unknown_model_key_names_entry_index(tmp_path):
    message = refused(tmp_path, MODEL + "foo = 1\n")
    assert message.endswith("fleet.toml: models.0.foo: unknown key")


def test_unknown_key_in_second_model_entry(tmp_path):
    text = '[[models]]\nid = "a"\npath = "org/a"\n' + MODEL + "colour = 'red'\n"
    assert refused(tmp_path, text).endswith("models.1.colour: unknown key")


def test_unknown_top_level_section_is_refused_and_named(tmp_path):
    message = refused(tmp_path, "[bogus]\nx = 1\n" + MODEL)
    assert message.startswith(f"{tmp_path / 'fleet.toml'}: ")
    assert "bogus" in message


def test_unknown_top_level_section_uses_the_same_wording(tmp_path):
    message = refused(tmp_path, "[bogus]\nx = 1\n" + MODEL)
    assert message == f"{tmp_path / 'fleet.toml'}: bogus: unknown key"


@pytest.mark.parametrize(("text", "key", "expected"), [
    ('[server]\nport = "abc"\n' + MODEL, "server.port", "int"),
    ('[server]\napi_keys = "k"\n' + MODEL, "server.api_keys", "array"),
    ('[server]\nallow_downloads = "yes"\n' + MODEL, "server.allow_downloads", "bool"),
    ('[memory]\nmax_models = "3"\n' + MODEL, "memory.max_models", "int"),
    ("[memory]\nbudget = 1024\n" + MODEL, "memory.budget", "str"),
    (MODEL + 'preload = "yes"\n', "models.0.preload", "bool"),
    (MODEL + "aliases = [1]\n", "models.0.aliases.0", "str"),
])
def test_wrong_type_names_the_key(tmp_path, text, key, expected):
    message = refused(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'fleet.toml'}: {key}: ")
    assert f"`{expected}`" in message


def test_a_negative_spare_count_is_refused(tmp_path):
    assert "memory.spares: must be 0 (none) or more" in refused(tmp_path, "[memory]\nspares = -1\n" + MODEL)


def test_invalid_enum_values_are_refused(tmp_path):
    assert "models.0.type" in refused(tmp_path, MODEL + 'type = "audio"\n')
    assert "memory.policy" in refused(tmp_path, '[memory]\npolicy = "fifo"\n' + MODEL)


def test_model_without_path_is_refused(tmp_path):
    message = refused(tmp_path, '[[models]]\nid = "m"\n')
    assert message == f"{tmp_path / 'fleet.toml'}: models.0.path: missing required key"


def test_model_without_id_is_refused(tmp_path):
    message = refused(tmp_path, MODEL + '[[models]]\npath = "org/x"\n')
    assert message.endswith("fleet.toml: models.1.id: missing required key")


@pytest.mark.parametrize(("text", "key"), [
    ("[server]\nport = 0\n", "server.port"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[server]\ndefault_max_tokens = 0\n", "server.default_max_tokens"),
    ("[memory]\nmax_models = 0\n", "memory.max_models"),
    ('[memory]\nidle_ttl = "forever"\n', "memory.idle_ttl"),
    ('[server]\nload_timeout = "soon"\n', "server.load_timeout"),
    ('[memory]\nbudget = "lots"\n', "memory.budget"),
    ('[memory]\nbudget = "150%"\n', "memory.budget"),
])
def test_out_of_range_values_name_the_key(tmp_path, text, key):
    assert f"fleet.toml: {key}: " in refused(tmp_path, text + MODEL)


def test_bad_model_idle_ttl_names_the_model(tmp_path):
    message = refused(tmp_path, MODEL + 'idle_ttl = "whenever"\n')
    assert "models.0.idle_ttl" in message


# ---------------------------------------------------------------------------------------------
# Durations and sizes: parsed once, into numbers that remember their text

TYPED = """
[server]
load_timeout = "90s"
progress_timeout = "1m30s"
restart_backoff = "250ms"
drain_timeout = "0"
keep_alive = "2"
max_body_size = "1KiB"
[memory]
budget = "50%"
idle_ttl = "1h"
[prompt_cache]
memory = "64MB"
disk = "0"
""" + MODEL + 'idle_ttl = "5m"\n'


def test_durations_and_sizes_are_numbers_after_parsing(tmp_path):
    config = load(tmp_path, TYPED)
    server, memory = config.server, config.memory
    durations = (server.load_timeout, server.progress_timeout, server.restart_backoff, server.drain_timeout,
                 server.keep_alive, memory.idle_ttl, config.models[0].idle_ttl)
    assert all(type(d) is Duration for d in durations)
    assert durations == (90.0, 90.0, 0.25, 0.0, 2.0, 3600.0, 300.0)
    assert type(server.max_body_size) is ByteSize and server.max_body_size == 1024
    cache = config.prompt_cache
    assert type(cache.memory) is ByteSize and cache.memory == 64 * 10**6
    assert type(cache.disk) is ByteSize and cache.disk == 0
    assert memory.budget.percent == 50.0 and memory.budget.of(4000) == 2000  # the machine decides, later


def test_defaults_are_typed_too():
    server, memory, cache = ServerConfig(), MemoryConfig(), PromptCacheConfig()
    assert (server.load_timeout, server.keep_alive, server.max_body_size) == (600.0, 75.0, 32 * 2**20)
    assert (memory.idle_ttl, memory.budget) == (1800.0, MemoryBudget("75%"))
    assert (cache.memory, cache.disk, cache.dir) == (512 * 2**20, 16 * 2**30, "")


@pytest.mark.parametrize("config", ["defaults", "typed"])
def test_resolved_config_round_trips_through_json(tmp_path, config):
    """The supervisor gets the config as JSON (`--config-json`): the same values come back, as
    the same types, with the text they were written as."""
    original = load_config(None, environ={}) if config == "defaults" else load(tmp_path, TYPED)
    copy = decode_config(encode_config(original))
    assert copy == original
    for section in ("server", "memory", "prompt_cache"):
        for name in getattr(original, section).__struct_fields__:
            before, after = getattr(getattr(original, section), name), getattr(getattr(copy, section), name)
            assert type(after) is type(before) and getattr(after, "text", None) == getattr(before, "text", None)
    assert [type(m.idle_ttl) for m in copy.models] == [type(m.idle_ttl) for m in original.models]


def test_json_carries_the_text_as_written(tmp_path):
    data = json.loads(encode_config(load(tmp_path, TYPED)))
    assert data["server"]["restart_backoff"] == "250ms"
    assert data["memory"]["budget"] == "50%"
    assert data["prompt_cache"]["memory"] == "64MB"
    assert data["models"][0]["idle_ttl"] == "5m"


def test_bad_json_value_is_refused_with_its_key():
    with pytest.raises(msgspec.ValidationError, match=r"is not a duration .* at `\$.server.load_timeout`"):
        decode_config(b'{"server": {"load_timeout": "soon"}}')


@pytest.mark.parametrize(("line", "key", "problem"), [
    ('[server]\nload_timeout = "soon"', "server.load_timeout",
     "'soon' is not a duration such as '30m', '1h', '10s' or '0'"),
    ('[server]\nmax_body_size = "big"', "server.max_body_size",
     "'big' is not a size such as '48GiB', '512MB' or '75%'"),
    ('[prompt_cache]\ndisk = "12X"', "prompt_cache.disk",
     "'12X' is not a size such as '48GiB', '512MB' or '75%'"),
    ('[memory]\nbudget = "0GiB"', "memory.budget", "must be more than 0 bytes"),
    ('[memory]\nbudget = "150%"', "memory.budget", "'150%': a share must be between 0 and 100%"),
    ("[server]\nload_timeout = 90", "server.load_timeout", "Expected `str`, got `int`"),
    ("[prompt_cache]\nmemory = 1024", "prompt_cache.memory", "Expected `str`, got `int`"),
])
def test_bad_duration_or_size_names_file_key_and_problem(tmp_path, line, key, problem):
    assert refused(tmp_path, line + "\n" + MODEL) == f"{tmp_path / 'fleet.toml'}: {key}: {problem}"


def test_model_idle_ttl_error_names_the_entry(tmp_path):
    message = refused(tmp_path, MODEL + '[[models]]\nid = "n"\npath = "org/n"\nidle_ttl = "soon"\n')
    assert message.endswith("fleet.toml: models.1.idle_ttl: 'soon' is not a duration such as '30m', '1h', '10s' or '0'")


def test_environment_overrides_durations_and_sizes(tmp_path):
    config = load(tmp_path, MODEL, environ={"MLX_FLEET_SERVER_LOAD_TIMEOUT": "30m",
                                             "MLX_FLEET_SERVER_PROGRESS_TIMEOUT": "45",
                                             "MLX_FLEET_SERVER_KEEP_ALIVE": '"10s"',
                                             "MLX_FLEET_MEMORY_BUDGET": "48GiB",
                                             "MLX_FLEET_PROMPT_CACHE_MEMORY": "0",
                                             "MLX_FLEET_PROMPT_CACHE_DIR": "~/kv"})
    assert config.server.load_timeout == 1800.0 and config.server.load_timeout.text == "30m"
    assert config.server.progress_timeout == 45.0
    assert config.server.keep_alive == 10.0
    assert config.memory.budget.size == 48 * 2**30
    assert config.prompt_cache.memory == 0 and type(config.prompt_cache.memory) is ByteSize
    assert prompt_cache_dir(config) == Path("~/kv").expanduser()


@pytest.mark.parametrize(("name", "value", "key"), [
    ("MLX_FLEET_SERVER_DRAIN_TIMEOUT", "soon", "server.drain_timeout"),
    ("MLX_FLEET_MEMORY_IDLE_TTL", "-1", "memory.idle_ttl"),
    ("MLX_FLEET_MEMORY_BUDGET", "0", "memory.budget"),
])
def test_bad_environment_duration_or_size_names_the_key(tmp_path, name, value, key):
    assert f"fleet.toml: {key}: " in refused(tmp_path, MODEL, environ={name: value})


# ---------------------------------------------------------------------------------------------
# Environment overrides


def test_environment_overrides_file(tmp_path):
    config = load(tmp_path, EXAMPLE, environ={
        "MLX_FLEET_SERVER_PORT": "9000",
        "MLX_FLEET_MEMORY_BUDGET": "50%",
        "MLX_FLEET_SERVER_API_KEYS": '["a","b"]',
    })
    assert config.server.port == 9000
    assert config.memory.budget.percent == 50.0
    assert config.server.api_keys == ["a", "b"]
    # untouched keys keep the file's values
    assert config.memory.idle_ttl.text == "30m"
    assert config.models[0].id == "smollm2"


def test_environment_overrides_without_a_section_in_the_file(tmp_path):
    config = load(tmp_path, MODEL, environ={"MLX_FLEET_MEMORY_MAX_MODELS": "7",
                                             "MLX_FLEET_SERVER_ALLOW_DOWNLOADS": "true",
                                             "MLX_FLEET_SERVER_STATE_DIR": "/var/lib/fleet"})
    assert config.memory.max_models == 7
    assert config.server.allow_downloads is True
    assert config.server.state_dir == "/var/lib/fleet"


def test_environment_overrides_apply_without_a_file():
    config = load_config(None, environ={"MLX_FLEET_SERVER_PORT": "9001"})
    assert config.server.port == 9001


def test_unrelated_environment_is_ignored(tmp_path):
    config = load(tmp_path, MODEL, environ={"MLX_FLEET_SERVER_PROT": "1", "MLX_FLEET_MODELS": "x",
                                             "PORT": "1234"})
    assert config.server.port == 8000


def test_environment_is_read_from_the_argument_not_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_FLEET_SERVER_PORT", "9999")
    assert load(tmp_path, MODEL, environ={}).server.port == 8000
    assert load(tmp_path, MODEL, environ={"MLX_FLEET_SERVER_PORT": "9002"}).server.port == 9002


def test_bad_environment_value_names_the_key(tmp_path):
    message = refused(tmp_path, MODEL, environ={"MLX_FLEET_SERVER_PORT": "abc"})
    assert "server.port" in message
    message = refused(tmp_path, MODEL, environ={"MLX_FLEET_MEMORY_BUDGET": "lots"})
    assert "memory.budget" in message


def test_quoted_environment_value_is_a_string(tmp_path):
    config = load(tmp_path, MODEL, environ={"MLX_FLEET_MEMORY_IDLE_TTL": '"0"',
                                             "MLX_FLEET_SERVER_ADMIN_KEY": '"12345"'})
    assert config.memory.idle_ttl == 0.0 and isinstance(config.memory.idle_ttl, Duration)
    assert config.server.admin_key == "12345"


def test_unquoted_environment_value_for_text_keys(tmp_path):
    """"0" would read as a TOML integer; a key written as text takes the text as it is."""
    config = load(tmp_path, MODEL, environ={"MLX_FLEET_MEMORY_IDLE_TTL": "0", "MLX_FLEET_SERVER_ADMIN_KEY": "12345",
                                             "MLX_FLEET_SERVER_MAX_BODY_SIZE": "1024"})
    assert config.memory.idle_ttl == 0.0 and config.memory.idle_ttl.text == "0"
    assert config.server.admin_key == "12345"
    assert config.server.max_body_size == 1024


# ---------------------------------------------------------------------------------------------
# Exposure, names, paths, policy


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_non_loopback_host_without_any_key_is_refused_at_serve(tmp_path, host):
    state = tmp_path / "state"
    config = load(tmp_path, f'[server]\nhost = "{host}"\nstate_dir = "{state}"\n' + MODEL)
    message = exposure_problem(config.server)
    assert message and "server.host" in message and "api_keys" in message and "mlx-fleet keys create" in message
    assert not state.exists()  # the check creates no state database


def test_non_loopback_host_from_environment_is_refused_at_serve(tmp_path):
    config = load(tmp_path, MODEL, environ={"MLX_FLEET_SERVER_HOST": "0.0.0.0",
                                            "MLX_FLEET_SERVER_STATE_DIR": f'"{tmp_path}"'})
    assert "server.host" in exposure_problem(config.server)


def test_a_key_in_the_state_database_or_the_admin_key_lets_a_public_server_start(tmp_path):
    config = load(tmp_path, f'[server]\nhost = "0.0.0.0"\nstate_dir = "{tmp_path}"\n' + MODEL)
    conn = keys.open_db(tmp_path)
    assert exposure_problem(config.server) is not None  # the tables exist, no key yet
    made = keys.create_key(conn, "first")
    assert exposure_problem(config.server) is None
    keys.revoke_key(conn, made.id)
    assert exposure_problem(config.server) is not None
    config.server.admin_key = "admin-0123456789"
    assert exposure_problem(config.server) is None


def test_non_loopback_host_with_api_keys_is_accepted(tmp_path):
    config = load(tmp_path, '[server]\nhost = "0.0.0.0"\napi_keys = ["secret"]\n' + MODEL)
    assert config.server.host == "0.0.0.0"
    assert config.server.api_keys == ["secret"] and exposure_problem(config.server) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_keys(tmp_path, host):
    assert load(tmp_path, f'[server]\nhost = "{host}"\n' + MODEL).server.host == host


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("myhost")


def test_duplicate_model_id_is_refused(tmp_path):
    message = refused(tmp_path, MODEL + MODEL)
    assert "models.1" in message and "'m'" in message and "already used" in message


def test_alias_colliding_with_another_id_is_refused(tmp_path):
    text = MODEL + 'aliases = ["other"]\n[[models]]\nid = "other"\npath = "org/other"\n'
    message = refused(tmp_path, text)
    assert "'other'" in message and "already used by model 'm'" in message


def test_duplicate_alias_is_refused(tmp_path):
    text = MODEL + 'aliases = ["x"]\n[[models]]\nid = "n"\npath = "org/n"\naliases = ["x"]\n'
    assert "already used" in refused(tmp_path, text)


@pytest.mark.parametrize("name", ["../etc", "a/b/c", "a/", "/a", "a/../b", "", "-lead", ".hidden", "sp ace", "a" * 129,
                                  "é", "tier:fast"])
def test_invalid_model_ids_are_refused(tmp_path, name):
    message = refused(tmp_path, f'[[models]]\nid = "{name}"\npath = "org/m"\n')
    assert "not a valid model name" in message


def test_invalid_alias_is_refused(tmp_path):
    assert "not a valid model name" in refused(tmp_path, MODEL + 'aliases = ["../x"]\n')


@pytest.mark.parametrize("name", ["m", "Qwen2.5-0.5B", "llama3:8b", "a_b", "a" * 128, "mlx-community/Qwen3-4B-4bit"])
def test_valid_model_ids_are_accepted(tmp_path, name):
    assert load(tmp_path, f'[[models]]\nid = "{name}"\npath = "org/m"\n').models[0].id == name


def test_existing_relative_path_resolves_against_config_directory(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    (conf_dir / "models" / "tiny").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load(conf_dir, '[[models]]\nid = "t"\npath = "models/tiny"\n')
    assert config.models[0].path == str((conf_dir / "models" / "tiny").resolve())


def test_dot_relative_path_resolves_even_if_absent(tmp_path):
    config = load(tmp_path, '[[models]]\nid = "t"\npath = "./later/model"\n'
                            '[[models]]\nid = "u"\npath = "../up/model"\n')
    assert config.models[0].path == str((tmp_path / "later" / "model").resolve())
    assert config.models[1].path == str((tmp_path.parent / "up" / "model").resolve())


def test_absolute_path_kept(tmp_path):
    target = tmp_path / "abs-model"
    target.mkdir()
    config = load(tmp_path, f'[[models]]\nid = "t"\npath = "{target}"\n')
    assert config.models[0].path == str(target.resolve())


def test_hub_repo_id_left_as_is(tmp_path):
    config = load(tmp_path, '[[models]]\nid = "x"\npath = "mlx-community/x"\n')
    assert config.models[0].path == "mlx-community/x"


def test_preload_policy_without_preloaded_model_is_refused(tmp_path):
    message = refused(tmp_path, '[memory]\npolicy = "preload"\n' + MODEL)
    assert "memory.policy" in message and "preload" in message


def test_preload_policy_with_a_preloaded_model_is_accepted(tmp_path):
    config = load(tmp_path, '[memory]\npolicy = "preload"\n' + MODEL + "preload = true\n"
                            '[[models]]\nid = "n"\npath = "org/n"\n')
    assert config.memory.policy == "preload"
    assert [m.preload for m in config.models] == [True, False]


# ---------------------------------------------------------------------------------------------
# Defaults, and the names a client may send


def test_no_config_file_gives_default_models():
    config = load_config(None, environ={})
    assert config.server.port == 8000 and config.server.host == "127.0.0.1"
    assert config.memory.policy == "lru"
    assert len(config.models) >= 1
    model = config.models[0]
    assert model.id == "smollm2"
    assert model.path.endswith(".gguf")
    assert Path(model.path).is_absolute() and Path(model.path).is_file()
    assert model.type == "text"
    assert [m.id for m in default_models()] == [m.id for m in config.models]


def test_default_budget_is_a_valid_share_of_physical_memory():
    config = load_config(None, environ={})
    total = psutil.virtual_memory().total
    assert 0 < config.memory.budget.of(total) <= total


def test_ids_and_aliases_name_their_model():
    config = FleetConfig(models=[
        ModelConfig(id="a", path="org/a", aliases=["alpha", "first"]),
        ModelConfig(id="b", path="org/b"),
    ])
    catalog = Catalog(config)
    catalog.rescan()
    assert set(catalog.names) == {"a", "alpha", "first", "b"}
    assert catalog.model_config(catalog.get("alpha")) is config.models[0] is catalog.model_config(catalog.get("first"))
    assert catalog.model_config(catalog.get("b")) is config.models[1]


def test_the_default_models_aliases():
    catalog = Catalog(load_config(None, environ={}))
    catalog.rescan()
    assert catalog.get("SmolLM2-135M-Instruct").id == "smollm2"


def test_aliases_of_a_loaded_file(tmp_path):
    catalog = Catalog(load(tmp_path, MODEL + 'aliases = ["mm"]\n'))
    catalog.rescan()
    assert catalog.names == {"m": "m", "mm": "m"}
