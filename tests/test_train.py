"""Training on a tiny model: it runs, resumes exactly, and its checkpoints load with lab.load."""

import json
from pathlib import Path

import numpy as np
import pytest

from lab.course import exercises as ex

import lab
from tests.conftest import flat_config, with_flat
from lab.training.config import TrainConfig
from lab.training.config_files import FLAT_KEYS, config_from_args
from lab.training.data_order import example_indices
from lab.training.loop import train

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(tmp_path, **kw) -> TrainConfig:
    cfg = config_from_args(str(ROOT / "configs" / "tiny.yaml"), [])
    return with_flat(cfg, corpus=str(ROOT / cfg.rows.corpus), heldout=str(ROOT / cfg.rows.heldout),
                               output_dir=str(tmp_path / "run"), **kw)


def losses(out_dir) -> list[tuple]:
    rows = [json.loads(l) for l in open(Path(out_dir) / "metrics.jsonl")]
    return [(r["step"], round(r["loss"], 5), round(r["ntp"], 5), round(r["cl"], 5)) for r in rows]


def test_data_order_is_a_pure_function_and_covers_the_corpus():
    cfg = flat_config(batch_size=4, grad_accum=2, seed=3)
    a = example_indices(5, 1, cfg, 100, rank=1, world=2)
    assert a == example_indices(5, 1, cfg, 100, rank=1, world=2)
    one_epoch = [i for s in range(100 // 16 + 1) for m in range(2) for r in range(2)
                 for i in example_indices(s, m, cfg, 100, r, 2)][:100]
    assert sorted(one_epoch) == list(range(100))


def test_training_runs_both_phases_and_checkpoint_loads(tmp_path):
    cfg = tiny_cfg(tmp_path)
    final = train(cfg)
    rows = losses(cfg.run.output_dir)
    assert [r[0] for r in rows] == list(range(1, cfg.optim.steps + 1))
    assert all(r[3] == 0 for r in rows[: cfg.objective.ntp_steps]) and all(r[2] == 0 for r in rows[cfg.objective.ntp_steps:])
    assert all(np.isfinite(r[1]) for r in rows)
    gem = lab.load(str(final), dtype="float32")
    assert gem.is_gem and gem.encode(["a text", "another"]).shape == (2, 64)
    again = lab.load(str(final), dtype="float32")
    np.testing.assert_array_equal(gem.encode(["a text"]), again.encode(["a text"]))
    assert (Path(cfg.run.output_dir) / "last").read_text().strip() == final.name


@pytest.mark.parametrize("lora_r", [4, 0])
def test_resume_equals_straight_run(tmp_path, lora_r):
    straight = tiny_cfg(tmp_path / "a", lora_r=lora_r)
    train(straight)
    split = tiny_cfg(tmp_path / "b", lora_r=lora_r)
    train(split, stop_after=2)
    assert len(losses(split.run.output_dir)) == 2
    train(split, resume=True)
    assert losses(split.run.output_dir) == losses(straight.run.output_dir)
    assert json.loads((Path(split.run.output_dir) / "resumes.json").read_text()) == [{"step": 2, "checkpoint": "checkpoint-2"}]
    assert not (Path(straight.run.output_dir) / "resumes.json").exists(), "a straight run records no resume"
    assert ex.check_resume(straight.run.output_dir, split.run.output_dir), "exercise 3.4 accepts this pair"
    assert not ex.check_resume(straight.run.output_dir, straight.run.output_dir)
    assert not ex.check_resume(split.run.output_dir, straight.run.output_dir), "3.4 needs a run that was resumed"


@pytest.fixture(scope="module", params=["tiny", "shipped-like"])
def trained_checkpoint(request, tmp_path_factory):
    """A trained checkpoint of configs/tiny.yaml (tiny-llama, k = 1), and one configured like the
    shipped model (tiny-smollm2 with its k, sink and readout head): exports are tested on both."""
    if request.param == "shipped-like":
        from lab.training.tiny_run import tiny_gem_checkpoint

        return Path(tiny_gem_checkpoint(str(tmp_path_factory.mktemp("shipped") / "run"), steps=4))
    cfg = tiny_cfg(tmp_path_factory.mktemp("exp"))
    return train(cfg)


def test_merged_export_round_trips(trained_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lab.weights.export import export_merged

    out = export_merged(trained_checkpoint, tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("hello", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4
    texts = ["a text to embed", "another, longer one"]
    np.testing.assert_allclose(lab.load(str(out), dtype="float32").encode(texts),
                               lab.load(str(trained_checkpoint), dtype="float32").encode(texts), atol=1e-5)


def test_a_run_folder_or_its_last_file_loads_the_newest_checkpoint(trained_checkpoint):
    from lab.weights.checkpoints import resolve_run

    run = trained_checkpoint.parent
    assert resolve_run(run) == resolve_run(run / "last") == trained_checkpoint
    assert lab.load(str(run / "last")).is_gem


def test_release_export_is_small_and_loads_the_same(trained_checkpoint, tmp_path):
    from lab.weights.export import export_release

    out = export_release(trained_checkpoint, tmp_path / "release", card="# card\n")
    names = {p.name for p in out.iterdir()}
    assert "training_state" not in names and {"metrics.jsonl", "README.md", "gem_config.json"} <= names
    from safetensors import safe_open

    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert all("lora_" in k for k in f.keys()), "only LoRA weights: no copy of the embedding matrix"
    texts = ["a text to embed", "another, longer one"]
    np.testing.assert_array_equal(lab.load(str(out), dtype="float32").encode(texts),
                                  lab.load(str(trained_checkpoint), dtype="float32").encode(texts))


def test_sentence_transformers_export_gives_the_gem_embeddings(trained_checkpoint, tmp_path):
    from sentence_transformers import SentenceTransformer

    from lab.weights.export import export_sentence_transformers

    if lab.load(str(trained_checkpoint)).gem_config.k > 1:  # the shipped model: k = 5
        with pytest.raises(ValueError, match="needs k=1 GEM token .* Use lab.load"):
            export_sentence_transformers(trained_checkpoint, tmp_path / "st")
        assert not (tmp_path / "st").exists()
        return
    out = export_sentence_transformers(trained_checkpoint, tmp_path / "st")
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())  # what TEI and vLLM read
    assert pooling["pooling_mode_lasttoken"] and not pooling["pooling_mode_mean_tokens"]
    texts = ["a text to embed", "another, longer one", "x"]
    st = SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(st, lab.load(str(trained_checkpoint), dtype="float32").encode(texts), atol=1e-4)


@pytest.mark.parametrize("extra", [{}, {"positive": "article", "alpha_cl": 0.5}], ids=["paper", "article-mixed"])
def test_two_processes_give_the_same_losses_as_one(tmp_path, extra):
    """DDP on CPU (gloo): 2 processes x batch 2 == 1 process x batch 4, both phases (article
    positives: the group ids are gathered with the negatives; mixed: NTP + InfoNCE in one step)."""
    import os
    import subprocess
    import sys

    one = tiny_cfg(tmp_path / "one", batch_size=4, steps=4, ntp_steps=2, save_every=100, **extra)
    train(one)
    two_dir = tmp_path / "two" / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lab", "train", "--config", str(ROOT / "configs" / "tiny.yaml"),
           f"--rows.corpus={one.rows.corpus}", f"--rows.heldout={one.rows.heldout}", f"--run.output_dir={two_dir}",
           "--optim.batch_size=2", "--optim.steps=4", "--objective.ntp_steps=2", "--run.save_every=100",
           *[f"--{FLAT_KEYS[k]}={v}" for k, v in extra.items()]]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 processes" in res.stderr
    a, b = losses(one.run.output_dir), losses(two_dir)
    assert [r[0] for r in a] == [r[0] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra[1:] == pytest.approx(rb[1:], rel=2e-3, abs=2e-3)


def test_prepared_model_is_in_training_mode(tmp_path):
    import torch

    from lab.training.setup import prepare_model

    gem = prepare_model(tiny_cfg(tmp_path, lora_dropout=0.1), torch.device("cpu"))
    assert gem.model.training, "dropout must be active while training"


def test_init_from_starts_where_the_checkpoint_ended_and_refuses_a_mismatch(tmp_path):
    first = tiny_cfg(tmp_path / "a")
    final = train(first)
    second = tiny_cfg(tmp_path / "b", init_from=str(Path(first.run.output_dir)), steps=1, ntp_steps=1,
                      lr_ntp=1e-12, warmup_steps=1)
    gem_a = lab.load(str(final), dtype="float32")
    gem_b = lab.load(str(train(second)), dtype="float32")
    np.testing.assert_allclose(gem_b.encode(["a text"]), gem_a.encode(["a text"]), atol=1e-5)
    fresh = lab.load(str(train(tiny_cfg(tmp_path / "c", steps=1, ntp_steps=1, lr_ntp=1e-12, warmup_steps=1))),
                     dtype="float32")
    assert not np.allclose(fresh.encode(["a text"]), gem_a.encode(["a text"]), atol=1e-3), "the weights came from init_from"
    with pytest.raises(ValueError, match="k: checkpoint 1, config 2"):
        train(tiny_cfg(tmp_path / "d", init_from=str(final), k=2))
    with pytest.raises(FileNotFoundError, match="not a GEM checkpoint"):
        train(tiny_cfg(tmp_path / "e", init_from=str(tmp_path)))


def test_init_from_with_a_larger_rank_grows_the_adapter_to_the_same_function(tmp_path):
    """On a tiny model with the shipped k, sink token and readout head: a rank-4 checkpoint (alpha 8) started
    at rank 8 and alpha 32 (another scale), with the anchor on as in the screens that grew the shipped model:
    the grown adapter computes what the checkpoint did (embedding and next-token logits), its new directions
    can train; the same rank at another alpha keeps the function too; a smaller rank is refused."""
    import torch

    from lab.storage import load_safetensors
    from lab.weights.checkpoints import ADAPTER_DIR

    from .conftest import shipped_gem_config

    shipped = shipped_gem_config()
    like = dict(model="tiny-smollm2", k=shipped.k, sink_token=shipped.sink_token, readout_head=shipped.readout_head,
                readout_dim=shipped.readout_dim)
    first = tiny_cfg(tmp_path / "a", **like)
    final = train(first)
    grown_cfg = tiny_cfg(tmp_path / "b", init_from=str(final), lora_r=8, lora_alpha=32, steps=1, ntp_steps=1,
                         lr_ntp=1e-12, warmup_steps=1, anchor_weight=2.0, **like)
    grown_final = train(grown_cfg)
    grown = lab.load(str(grown_final), dtype="float32")
    before = lab.load(str(final), dtype="float32")
    np.testing.assert_allclose(grown.encode(["a text", "another one"]), before.encode(["a text", "another one"]), atol=1e-5)
    ids = before.tokenizer("a text to continue", return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(grown.model(**ids).logits.numpy(), before.model(**ids).logits.numpy(), atol=1e-4)
    state = load_safetensors(grown_final / ADAPTER_DIR / "adapter_model.safetensors")
    a = next(v for k, v in state.items() if "lora_A" in k)
    b = next(v for k, v in state.items() if "lora_B" in k)
    assert a.shape[0] == 8 and b.shape[1] == 8
    assert a[4:].abs().sum() > 0, "the new rows of A keep their fresh initialisation, so B's new columns get a gradient"
    rescaled = lab.load(str(train(tiny_cfg(tmp_path / "d", init_from=str(final), lora_alpha=16, steps=1, ntp_steps=1,
                                           lr_ntp=1e-12, warmup_steps=1, **like))), dtype="float32")
    np.testing.assert_allclose(rescaled.encode(["a text"]), before.encode(["a text"]), atol=1e-5)  # same rank, alpha 8 -> 16
    with pytest.raises(ValueError, match="lora.r: checkpoint 4, config 2 .*raise the rank, not lower it"):
        train(tiny_cfg(tmp_path / "c", init_from=str(final), lora_r=2, lora_alpha=4, **like))


def test_a_short_run_of_the_tiny_recipe_gives_the_losses_recorded_before_the_nested_config(tmp_path):
    """The nested config and the objective's terms changed no number: these losses were recorded at
    commit 2596671 (flat config, objective with built-in extensions) for the same run. The tolerance
    covers other CPUs' float kernels, not a change of method."""
    cfg = tiny_cfg(tmp_path, steps=4, ntp_steps=2, save_every=100, log_every=1)
    train(cfg)
    rows = [json.loads(line) for line in open(Path(cfg.run.output_dir) / "metrics.jsonl")]
    assert [r["loss"] for r in rows] == pytest.approx([5.622105, 5.652561, 0.161913, 0.039584], rel=1e-4)


def test_save_every_zero_saves_only_the_last_step(tmp_path):
    final = train(tiny_cfg(tmp_path, steps=3, ntp_steps=1, save_every=0))
    assert final.name == "checkpoint-3"
    assert sorted(p.name for p in final.parent.glob("checkpoint-*")) == ["checkpoint-3"]


def test_a_new_run_into_a_folder_holding_a_run_is_refused_unless_resumed_or_forced(tmp_path):
    cfg = tiny_cfg(tmp_path, steps=2, ntp_steps=1, save_every=1)
    train(cfg)
    (Path(cfg.run.output_dir) / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds a run .*--resume.*--force"):
        train(cfg)
    final = train(cfg, force=True)
    assert sorted(p.name for p in final.parent.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert [r[0] for r in losses(cfg.run.output_dir)] == [1, 2], "the new run's log only, no repeated steps"
    assert (Path(cfg.run.output_dir) / "notes.txt").read_text() == "mine", "nothing but the old run is removed"


def test_a_resumed_log_has_no_repeated_steps_and_killed_writes_leave_no_debris(tmp_path):
    """A run stopped after its checkpoint at step 2 but logged step 3 before it was killed: the
    resumed metrics.jsonl holds each step once; hidden temporaries of the killed write are gone."""
    cfg = tiny_cfg(tmp_path, steps=4, ntp_steps=2, save_every=2, log_every=1)
    train(cfg, stop_after=2)
    out = Path(cfg.run.output_dir)
    with open(out / "metrics.jsonl", "a") as f:  # logged after the checkpoint, then the process died
        f.write(json.dumps({"step": 3, "loss": 9.9, "ntp": 9.9, "cl": 0.0}) + "\n")
    debris = out / ".checkpoint-3.1234abcd.tmp"
    debris.mkdir()
    (debris / "adapter_model.safetensors").write_bytes(b"half")
    (out / ".last.x1y2.tmp").write_text("check")
    train(cfg, resume=True)
    steps = [json.loads(l)["step"] for l in open(out / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_checkpoints_rotate_keeping_the_newest_and_the_best(tmp_path):
    from lab.training.state import best_step, rotate_checkpoints

    cfg = tiny_cfg(tmp_path, steps=5, ntp_steps=2, save_every=1, log_every=1)
    final = train(cfg.updated({"run.keep_last": 2}))
    assert sorted(p.name for p in final.parent.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    assert (final.parent / "last").read_text().strip() == "checkpoint-5"
    run = tmp_path / "fake"
    for s in (10, 20, 30, 40, 50):
        (run / f"checkpoint-{s}").mkdir(parents=True)
    metrics = [{"step": 20, "eval_x": 0.9}, {"step": 40, "eval_x": 0.5}]
    assert best_step(metrics, "eval_x") == 20 and best_step(metrics, "") is None
    assert rotate_checkpoints(run, 2, best=20) == ["checkpoint-10", "checkpoint-30"]
    assert rotate_checkpoints(run, 0) == [] and len(list(run.iterdir())) == 3
