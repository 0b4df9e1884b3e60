"""Turn a configured model path into a ready engine, with the library that fits its type.

Every loader's failure becomes a `ModelNotLoadable` with a message an operator can act on; in
particular a hub repo id that is not cached, with downloads off, says so instead of hanging.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlx_fleet.worker.engines.base import Engine


class ModelNotLoadable(Exception):
    """The model cannot be loaded; the message is shown to operators as it is."""


def resolve(path: str, state_dir: Path) -> str:
    """A GGUF file is converted once into an mlx-lm directory under the state directory."""
    if path.endswith(".gguf"):
        from mlx_fleet.worker.gguf.convert import ensure_converted

        return str(ensure_converted(Path(path), state_dir / "models"))
    return path


def _guarded(path: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except FileNotFoundError as e:
        raise ModelNotLoadable(f"model files not found for {path!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the hub, the loaders and the model code raise anything
        name = type(e).__name__
        if "LocalEntryNotFound" in name or "OfflineMode" in name or "offline" in str(e).lower():
            raise ModelNotLoadable(
                f"{path!r} is not a local directory and is not in the Hugging Face cache; downloads are "
                "off (set server.allow_downloads = true to fetch it)"
            ) from None
        raise ModelNotLoadable(f"{name}: {e}") from None


def load_engine(kind: str, path: str, state_dir: Path, *, prompt_cache_bytes: int = 512 * 2**20,
                prompt_cache_dir: Path | None = None, prompt_cache_disk: int = 0) -> Engine:
    """The engine for a model: TextEngine, VisionEngine or EmbeddingEngine."""
    if kind == "vision":
        from mlx_fleet.worker.engines.vision import load_vision

        return _guarded(path, lambda: load_vision(path))
    if kind == "embeddings":
        from mlx_fleet.worker.engines.embed import load_embeddings

        return _guarded(path, lambda: load_embeddings(path))
    from mlx_fleet.worker.engines.text import load_text

    return _guarded(path, lambda: load_text(resolve(path, state_dir), prompt_cache_bytes=prompt_cache_bytes,
                                            disk_dir=prompt_cache_dir, disk_bytes=prompt_cache_disk))
