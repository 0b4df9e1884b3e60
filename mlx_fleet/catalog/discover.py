"""Find models on disk: scan folders to a bounded depth, and the Hugging Face cache.

Every directory with a `config.json` and safetensors weights is a model (its subfolders are not
searched further), and so is every GGUF file the worker's converter accepts. Nothing here
imports MLX or huggingface_hub, and nothing touches the network: the hub cache is read as the
directory layout huggingface_hub writes (`models--org--name/snapshots/<rev>/`, `refs/main`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mlx_fleet.catalog.entry import ModelEntry, Source
from mlx_fleet.catalog.inspect import NotAModel, describe_dir, describe_gguf
from mlx_fleet.model_types import hf_cache_dir, hf_cache_snapshot

log = logging.getLogger("mlx_fleet.catalog")

GGUF_SUFFIX = ".gguf"
_HF_PREFIX = "models--"


def discover(folders: Iterable[str], max_depth: int, hf_cache: bool) -> list[ModelEntry]:
    """Every model found, scan folders first (ids may repeat: see `unique_ids`)."""
    found = [e for folder in folders for e in scan_folder(Path(folder).expanduser(), max_depth)]
    if hf_cache:
        found += scan_hf_cache(hf_cache_dir())
    return found


def scan_folder(root: Path, max_depth: int) -> Iterator[ModelEntry]:
    """Models under `root`: depth 0 is `root` itself; hidden folders are skipped."""
    if not root.is_dir():
        log.warning("catalog: scan folder %s does not exist", root)
        return
    pending = [(root, 0)]
    while pending:
        directory, depth = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
        except OSError as e:
            log.warning("catalog: cannot read %s: %s", directory, e)
            continue
        names = {e.name for e in entries}
        if "config.json" in names:
            try:
                yield ModelEntry.from_facts(directory.name, str(directory), "scan",
                                            describe_dir(directory, directory.name))
                continue
            except NotAModel as e:
                log.debug("catalog: %s", e)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.name.endswith(GGUF_SUFFIX) and entry.is_file():
                yield from _gguf(Path(entry.path))
            elif depth < max_depth and entry.is_dir():
                pending.append((Path(entry.path), depth + 1))


def _gguf(path: Path) -> Iterator[ModelEntry]:
    try:
        yield ModelEntry.from_facts(path.stem, str(path), "scan", describe_gguf(path))
    except NotAModel as e:
        log.info("catalog: skipping %s", e)


def scan_hf_cache(cache: Path) -> Iterator[ModelEntry]:
    """Each cached model repo, by its repo id, at the snapshot `refs/main` names."""
    try:
        repos = sorted(e.name for e in os.scandir(cache) if e.name.startswith(_HF_PREFIX) and e.is_dir())
    except OSError:
        return
    for name in repos:
        org, sep, repo = name[len(_HF_PREFIX):].partition("--")
        repo_id = f"{org}/{repo}" if sep else org
        snapshot = hf_cache_snapshot(repo_id)
        if snapshot is None:
            continue
        try:
            yield ModelEntry.from_facts(repo_id, str(snapshot), "hf_cache", describe_dir(snapshot, repo_id))
        except NotAModel as e:
            log.debug("catalog: %s", e)


def unique_ids(entries: list[ModelEntry], taken: Iterable[str] = ()) -> list[ModelEntry]:
    """The first model keeps its id; a later one with the same id gets `-2`, `-3`... and a warning."""
    used = set(taken)
    for entry in entries:
        if entry.id in used:
            n = 2
            while f"{entry.id}-{n}" in used:
                n += 1
            log.warning("catalog: two models are named %r; the one at %s is served as %r", entry.id, entry.path,
                        f"{entry.id}-{n}")
            entry.id = f"{entry.id}-{n}"
        used.add(entry.id)
    return entries
