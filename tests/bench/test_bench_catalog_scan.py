"""Catalog: how long one scan of 1,000 model folders takes (target: under a second).

Each folder holds a realistic `config.json`, a tokenizer config with a chat template, and an
empty weight stub (the scan reads headers, never weights; an empty stub makes it read its first
bytes and give up, which is the slower path). The folders sit two levels deep, in groups of
fifty, as a tidy `~/models` would. Timed: `Catalog.rescan()`, everything a rescan does
(walking, reading, tiers, merging), cold-ish (the files were just written) and then warm.

Settings: BENCH_ROUNDS (default 3), BENCH_CATALOG_MODELS (default 1000).
Results: bench-results/catalog_scan.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench_report import med, save, table
from benchlib import env_int, rounds
from mlx_fleet.catalog.catalog import Catalog
from mlx_fleet.config import CatalogConfig, FleetConfig

pytestmark = [pytest.mark.bench]

CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
          "num_hidden_layers": 16, "max_position_embeddings": 8192,
          "quantization": {"group_size": 64, "bits": 4}}
TOKENIZER = {"chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                              "{% endfor %}{% if tools %}{{ tools | tojson }}{% endif %}"}


def write_models(root: Path, count: int) -> None:
    for i in range(count):
        folder = root / f"group-{i // 50:02d}" / f"model-{i:04d}-4bit"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(CONFIG))
        (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER))
        (folder / "model.safetensors").touch()


def test_catalog_scan(tmp_path: Path) -> None:
    count = env_int("BENCH_CATALOG_MODELS", 1000)
    write_models(tmp_path / "models", count)
    catalog = Catalog(FleetConfig(catalog=CatalogConfig(scan=[str(tmp_path / "models")])))
    times = []
    for _ in range(rounds(3)):
        started = time.perf_counter()
        result = catalog.rescan()
        times.append(time.perf_counter() - started)
        assert result.models_found == count
    table(f"Catalog scan of {count} model folders", ["round", "seconds", "models/s"],
          [[str(i + 1), t, count / t] for i, t in enumerate(times)])
    print(f"[bench] catalog scan: {count} folders in {med(times):.3f} s (median; target < 1 s)")
    save("catalog_scan", {"models": count, "seconds": times, "median": med(times)})
