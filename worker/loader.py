"""Turn a configured model path into a loaded model, with the library that fits its type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONTEXT = 4096


class LoadError(Exception):
    """The model cannot be loaded; the message is shown to operators as it is."""


@dataclass
class LoadedText:
    model: object
    tokenizer: object
    context_length: int


def resolve(path: str, state_dir: Path) -> str:
    """A GGUF file is converted once into an mlx-lm directory under the state directory."""
    if path.endswith(".gguf"):
        from worker.gguf import ensure_converted

        return str(ensure_converted(Path(path), state_dir / "models"))
    return path


def load_text(path: str, state_dir: Path) -> LoadedText:
    from mlx_lm import load

    try:
        model, tokenizer, config = load(resolve(path, state_dir), return_config=True)
    except FileNotFoundError as e:
        raise LoadError(f"model files not found for {path!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the hub, the loader and the model code raise anything
        name = type(e).__name__
        if "LocalEntryNotFound" in name or "OfflineMode" in name or "offline" in str(e).lower():
            raise LoadError(
                f"{path!r} is not a local directory and is not in the Hugging Face cache; downloads are "
                "off (set server.allow_downloads = true to fetch it)"
            ) from None
        raise LoadError(f"{name}: {e}") from None
    context = int(config.get("max_position_embeddings") or getattr(tokenizer, "model_max_length", 0) or DEFAULT_CONTEXT)
    return LoadedText(model, tokenizer, context)

