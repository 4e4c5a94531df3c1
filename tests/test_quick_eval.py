"""Quick evaluation: Lee-50 loads as documented; scores behave; the train loop logs them."""

import dataclasses
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from lab.corpora.eval_sets import lee50
from lab.evaluation.quick import heldout_perplexity, lee50_spearman, quick_eval, spearman
from lab.training.loop import train

from .conftest import tiny_gem
from .test_train import ROOT, tiny_cfg


def test_lee50_data():
    docs, pairs = lee50()
    assert len(docs) == 50 and len(pairs) == 1225
    assert all(0.0 <= s <= 1.0 for _, _, s in pairs)


def test_spearman_sanity():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_perfect_encoder_scores_one_on_lee50():
    """An 'encoder' that returns the human similarity structure scores Spearman 1."""
    docs, pairs = lee50()
    from lab.storage import package_dir

    scores = np.loadtxt(package_dir("gensim") / "test" / "test_data" / "similarities0-1.txt")
    upper = np.triu(scores, 1)
    sym = upper + upper.T  # the pair scores (i < j) mirrored: what a perfect encoder reproduces

    class Oracle:  # embeddings whose Gram matrix is a monotone map of the human scores
        def encode(self, texts, **kw):
            w, v = np.linalg.eigh(sym + 50 * np.eye(50))
            return v * np.sqrt(w)

    # not exactly 1: the human scores have many ties, which float noise in the Gram matrix breaks
    assert lee50_spearman(Oracle()) > 0.99

    class Random:
        def encode(self, texts, **kw):
            return np.random.default_rng(0).normal(size=(len(texts), 64))

    assert abs(lee50_spearman(Random())) < 0.1, "a random encoder is near chance"


def test_tiny_model_scores_are_near_uniform():
    gem = tiny_gem("llama", k=1, max_length=64)
    ppl = heldout_perplexity(gem, str(ROOT / "data/sample/wiki_heldout_sample.jsonl"), max_rows=20)
    assert 50 < ppl < 2000, "a random byte-level model is near-uniform over its ~260 tokens"


def test_quick_eval_of_a_fixed_tiny_model_is_pinned():
    """Same weights, same rows, same numbers: the values were recorded from the lab before its
    layered refactor (tokenization, rows, masks, pooling and perplexity all feed into them)."""
    gem = tiny_gem("llama", k=1, max_length=64)
    r = quick_eval(gem, str(ROOT / "data/sample/wiki_heldout_sample.jsonl"), max_rows=10)
    assert r["lee50_spearman"] == pytest.approx(-0.010859386417745816, abs=1e-4)
    assert r["heldout_ppl"] == pytest.approx(269.2876778189348, rel=1e-4)


def test_train_logs_quick_eval(tmp_path):
    cfg = dataclasses.replace(tiny_cfg(tmp_path), eval_every=3, max_length=32)
    train(cfg, evaluate=partial(quick_eval, heldout=cfg.heldout, max_rows=8))
    rows = [json.loads(l) for l in open(Path(cfg.output_dir) / "metrics.jsonl")]
    evals = [r for r in rows if "eval_heldout_ppl" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert all(np.isfinite(r["eval_lee50_spearman"]) for r in evals)
