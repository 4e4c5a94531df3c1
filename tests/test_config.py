"""The training config: nested by component, every committed YAML loads, a bad key or value is an
error that names it and the nearest valid key, saved configs (old flat ones too) load back."""

import json
from pathlib import Path

import pytest
import yaml

from lab.gem.config import GemConfig
from lab.training.config import GROUPS, TrainConfig, all_keys
from lab.training.config_files import FLAT_KEYS, config_from_args, load_saved_config, migrate_flat

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(ROOT.glob("configs/*.yaml")) + sorted(p for p in ROOT.glob("research/**/*.yaml"))


def test_the_committed_configs_are_the_recipes_and_the_studies():
    names = {p.relative_to(ROOT).as_posix() for p in COMMITTED}
    assert {"configs/tiny.yaml", "configs/gem-smollm2-135m.yaml", "configs/gem-smollm2-135m-gpu.yaml",
            "configs/gem-smollm2-135m-anchored.yaml", "configs/gem-smollm2-135m-stop.yaml",
            "configs/gem-smollm2-135m-contrast.yaml", "configs/gem-smollm2-135m-mixed.yaml",
            "configs/gem-smollm2-135m-r64.yaml"} <= names
    assert len([n for n in names if n.startswith("research/")]) >= 25, "the studies' configs are collected too"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_committed_config_loads_and_uses_only_group_keys(path):
    cfg = config_from_args(str(path), [])
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= {"base", "model", *GROUPS}, f"{path.name}: flat keys {sorted(set(raw) - set(GROUPS))}"
    assert cfg.gem.base_model == cfg.model and not cfg.gem.trained, "the run sets the GEM config's backbone"


def test_the_gem_settings_are_one_gem_config():
    cfg = config_from_args(str(ROOT / "configs/gem-smollm2-135m-anchored.yaml"), [])
    assert isinstance(cfg.gem, GemConfig) and (cfg.gem.k, cfg.gem.sink_token, cfg.gem.readout_dim) == (5, "<|endoftext|>", 384)
    with pytest.raises(ValueError, match="gem.base_model is set by training .set `model` instead."):
        TrainConfig.from_dict({"gem": {"base_model": "x"}})


@pytest.mark.parametrize("override, message", [
    ("--stepz=3", "unknown config key `stepz`; did you mean `optim.steps`?"),
    ("--steps=3", "unknown config key `steps`; did you mean `optim.steps`?"),
    ("--optim.setps=3", "did you mean `optim.steps`?"),
    ("--k=5", "did you mean `gem.k`?"),
    ("--lora_r=4", "did you mean `lora.r`?"),
    ("--optim.steps=1.5", "optim.steps must be an integer, got 1.5"),
    ("--optim.lr_ntp=fast", "optim.lr_ntp must be a number, got 'fast'"),
    ("--lora.train_backbone='no'", "lora.train_backbone must be true or false, got 'no'"),
    ("--optim.grad_accum=0", "optim.grad_accum must be >= 1"),
    ("--run.save_every=-1", "run.save_every must be >= 0"),
    ("--gem.sink_token=3", "gem.sink_token must be a string or null, got 3"),
    ("--run.attention=flash_attention_2", "run.attention must be one of"),
    ("--lora.targets=q_proj", "lora.targets must be a list of names"),
    ("steps=3", "must look like --group.key=value"),
])
def test_a_bad_key_or_value_is_named_with_the_fix(override, message):
    with pytest.raises(ValueError) as err:
        config_from_args(None, [override])
    assert message in str(err.value)


def test_a_misspelt_key_in_yaml_is_named_with_its_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim:\n  stpes: 10\n")
    with pytest.raises(ValueError, match=r"mine.yaml: unknown config key `optim.stpes`; did you mean `optim.steps`\?"):
        config_from_args(str(path), [])
    path.write_text("optim: [1, 2]\n")
    with pytest.raises(ValueError, match="`optim` must be a mapping"):
        config_from_args(str(path), [])
    path.write_text("optim: {steps: 3\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        config_from_args(str(path), [])


def test_numbers_in_yaml_notation_are_numbers():
    cfg = config_from_args(None, ["--optim.lr_cl=1e-4", "--optim.steps=2e3", "--lora.targets=[q_proj]"])
    assert cfg.optim.lr_cl == 1e-4 and isinstance(cfg.optim.lr_cl, float)
    assert cfg.optim.steps == 2000 and isinstance(cfg.optim.steps, int) and cfg.lora.targets == ("q_proj",)


def test_base_configs_merge_group_by_group(tmp_path):
    (tmp_path / "a.yaml").write_text("optim: {steps: 10, batch_size: 4}\ngem: {k: 2}\nobjective: {ntp_steps: 5}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim: {steps: 20}\n")
    cfg = config_from_args(str(tmp_path / "b.yaml"), [])
    assert (cfg.optim.steps, cfg.optim.batch_size, cfg.gem.k) == (20, 4, 2)


def test_saved_configs_round_trip_and_old_flat_ones_migrate():
    cfg = config_from_args(str(ROOT / "configs/gem-smollm2-135m-gpu.yaml"), [])
    assert load_saved_config(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for folder in ("gem-smollm2-135m-anchored", "gem-smollm2-135m-gpu"):  # shipped before the nested config: flat
        flat = json.loads((ROOT / "checkpoints" / folder / "train_config.json").read_text())
        assert "k" in flat and load_saved_config(flat).gem.k == flat["k"] == 5
    # every old setting has a new home; gem.readout (mean | concat), run.attention and checkpoint
    # rotation, the reconstruction end and decoding width are new
    new = {"gem.readout", "run.attention", "run.keep_last", "run.best_metric", "rows.reconstruction_end",
           "gem.reconstruct_beams"}
    assert set(FLAT_KEYS.values()) - {None} == set(all_keys()) - new
    with pytest.raises(ValueError, match="did you mean `optim.steps`"):
        migrate_flat({"stesp": 3})


def test_updated_is_validated_and_leaves_the_original():
    cfg = TrainConfig()
    more = cfg.updated({"optim.steps": 500, "gem.k": 3})
    assert (more.optim.steps, more.gem.k, cfg.optim.steps, cfg.gem.k) == (500, 3, 1000, 1)
    with pytest.raises(ValueError, match="objective.ntp_steps must be between 0 and optim.steps"):
        cfg.updated({"optim.steps": 10})


def test_the_printed_config_shows_the_papers_knobs_first():
    text = TrainConfig().describe()
    order = [text.index(f"\n{g}:") for g in ("gem", "rows", "objective", "extensions", "optim", "lora", "run")]
    assert order == sorted(order)
    assert "# the paper's loss: L = (1 - alpha) L_ntp + alpha L_cl" in text
