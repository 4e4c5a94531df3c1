"""Distillation into a teacher's space: a projection readout head (readout_dim), its closed-form
start (ridge regression to the teacher), the embedding distillation term, and their config checks."""

import json

import pytest
import torch

from tests.conftest import flat_config
from lab.gem.readout import ReadoutHead
from lab.weights.checkpoints import load_checkpoint
from lab.storage import PROJECT_ROOT as ROOT
from lab.training import loop
from lab.training.collate import GemCollator
from lab.training.head_init import chosen_ridge, fit_head_to_teacher, head_init_texts, ridge_map
from lab.training.losses import LogitScale, embedding_distillation
from lab.training import head_init, setup
from lab.training.terms import EmbeddingDistillation
from lab.training.objective import GemObjective
from lab.training.setup import prepare_model
from lab.training.spans import SPAN_WORDS, span_words
from .conftest import fake_teacher

TEACHER_DIM = 16




def _cfg(tmp_path, **kw):
    return flat_config(**{**dict(model="tiny-llama", corpus=str(ROOT / "data/sample/wiki_train_sample.jsonl"),
                                 heldout=str(ROOT / "data/sample/wiki_heldout_sample.jsonl"), batch_size=8,
                                 max_length=48, steps=4, ntp_steps=2, warmup_steps=1, save_every=2, eval_every=0,
                                 log_every=1, p_plain=0.5, lr_ntp=1e-3, lr_cl=1e-3, alpha_cl=0.5,
                                 readout_head=True, readout_dim=TEACHER_DIM, distill_embedding_weight=1.0,
                                 head_init="ridge", head_init_texts=48, output_dir=str(tmp_path / "run"),
                                 precision="fp32"), **kw})


def test_a_projection_head_maps_into_its_own_width_and_round_trips(tmp_path):
    head = ReadoutHead(8, 5)
    x = torch.randn(3, 8)
    assert head(x).shape == (3, 5) and head.out_dim == 5 and not head.residual
    w, b = head.as_matrix()
    torch.testing.assert_close(x @ w.T + b, head(x))
    head.save(tmp_path)
    other = ReadoutHead(8, 5)
    other.load(tmp_path)
    torch.testing.assert_close(other(x), head(x))
    residual = ReadoutHead(8)
    with torch.no_grad():
        residual.linear.weight.normal_()
    w, b = residual.as_matrix()
    torch.testing.assert_close(x @ w.T + b, residual(x)), "the residual head as one affine map: I + W"


def test_ridge_map_recovers_an_affine_map_whatever_the_feature_scales():
    torch.manual_seed(0)
    x = torch.randn(400, 12) * torch.linspace(0.01, 100.0, 12)  # outlier dimensions, as hidden states have
    w_true, b_true = torch.randn(3, 12), torch.randn(3)
    w, b = ridge_map(x, x @ w_true.T + b_true, ridge=1e-8)
    torch.testing.assert_close(w, w_true, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(b, b_true, rtol=1e-3, atol=1e-3)


def test_the_chosen_ridge_is_small_for_a_clean_map_and_large_for_noise():
    torch.manual_seed(0)
    x = torch.randn(300, 40)
    clean = x @ torch.randn(4, 40).T
    assert chosen_ridge(x, clean) == 0.01
    noise = torch.randn(300, 4)
    assert chosen_ridge(x, noise) >= 0.1, "nothing to learn: the fit should be shrunk"


def test_embedding_distillation_is_zero_at_the_teacher_and_names_a_width_mismatch():
    t = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    assert float(embedding_distillation(3.0 * t, t)) == pytest.approx(0.0, abs=1e-6), "scale-free: cosine"
    assert float(embedding_distillation(-t, t)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="readout_dim: 4"):
        embedding_distillation(torch.randn(5, 6), t)


def test_config_names_what_teacher_space_distillation_needs(tmp_path):
    with pytest.raises(ValueError, match="readout_head: true"):
        _cfg(tmp_path, readout_head=False, readout_dim=0)
    with pytest.raises(ValueError, match="readout_dim must be 0, or > 0 with readout_head=True"):
        _cfg(tmp_path, readout_head=False, distill_embedding_weight=0.0, head_init="default")
    with pytest.raises(ValueError, match="head_init: ridge"):
        _cfg(tmp_path, readout_dim=0, distill_embedding_weight=0.0)


def test_fitted_head_brings_the_embedding_close_to_the_teacher(tmp_path):
    cfg = _cfg(tmp_path)
    gem = prepare_model(cfg, torch.device("cpu"))
    objective = GemObjective(gem.model, LogitScale(), readout_head=gem.readout_head,
                             terms=[EmbeddingDistillation(1.0, fake_teacher)])
    collator = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)
    texts = [json.loads(r)["text"] for r in (ROOT / "data/sample/wiki_train_sample.jsonl").read_text().splitlines()][:64]
    examples = [{"text": t, "index": i} for i, t in enumerate(texts[:8])]
    before = float(objective(collator(examples), alpha=1.0)["distill_embedding"])
    fit = fit_head_to_teacher(objective.eval(), collator, fake_teacher, texts)
    after = float(objective(collator(examples), alpha=1.0)["distill_embedding"])
    assert fit > 0.5 and after < before, (fit, before, after)


def test_a_teacher_space_run_fits_the_head_when_the_contrastive_phase_starts_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(setup, "distillation_teacher", lambda cfg: fake_teacher)
    fitted = []
    real_fit = head_init.fit_head_to_teacher
    monkeypatch.setattr(head_init, "fit_head_to_teacher", lambda *a, **k: fitted.append(1) or real_fit(*a, **k))
    cfg = _cfg(tmp_path)
    straight = loop.train(cfg)
    assert len(fitted) == 1, "fitted once, at step ntp_steps"
    gem = load_checkpoint(straight)
    assert gem.embedding_dim() == TEACHER_DIM and gem.encode(["a text"]).shape == (1, TEACHER_DIM)
    rows = [r for r in gem_metrics(straight.parent) if r["alpha"] > 0]
    assert rows and all(r["distill_embedding"] > 0 for r in rows)
    # stopped after the fit and resumed: the same head as the straight run
    cfg2 = _cfg(tmp_path, output_dir=str(tmp_path / "run2"))
    loop.train(cfg2, stop_after=3)
    resumed = load_checkpoint(loop.train(cfg2, resume=True))
    torch.testing.assert_close(resumed.readout_head.linear.weight, gem.readout_head.linear.weight)
    assert len(fitted) == 2, "a resumed run past the fit does not refit"


def gem_metrics(ckpt):
    import json
    return [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]


def test_head_refit_fits_again_before_the_last_step(tmp_path, monkeypatch):
    monkeypatch.setattr(setup, "distillation_teacher", lambda cfg: fake_teacher)
    steps = []
    real_fit = head_init.fit_head_to_teacher
    monkeypatch.setattr(head_init, "fit_head_to_teacher", lambda *a, **k: steps.append(1) or real_fit(*a, **k))
    loop.train(_cfg(tmp_path, steps=5, head_refit=True))
    assert len(steps) == 2, "at the start of the contrastive phase and before the last step"
    with pytest.raises(ValueError, match="extensions.head_refit needs extensions.head_init: ridge"):
        _cfg(tmp_path, head_refit=True, head_init="default")


def test_ridge_texts_with_spans_are_the_same_draw_cut_to_words():
    corpus = [f"text number {i} has a few words, and some punctuation." for i in range(100)]
    whole = head_init_texts(corpus, 20, seed=3)
    assert whole == head_init_texts(corpus, 20, seed=3, span_share=0.0) and len(set(whole)) == 20
    cut = head_init_texts(corpus, 20, seed=3, span_share=1.0)
    assert all(c in " ".join(span_words(w)) and len(c.split()) <= max(SPAN_WORDS) for c, w in zip(cut, whole))
    half = head_init_texts(corpus, 20, seed=3, span_share=0.5)
    assert 0 < sum(h in corpus for h in half) < 20
