"""Quick evaluation: Lee-50 loads as documented; scores behave; the train loop logs them."""

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import with_flat
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


def test_a_model_with_uniform_logits_has_the_vocabulary_size_as_perplexity():
    """Perplexity = exp(mean cross-entropy over the scored tokens): with every logit equal it is the
    vocabulary size, whatever the texts, their padding and their batching."""
    gem = tiny_gem("llama", k=1, max_length=64)
    with torch.no_grad():
        gem.model.get_output_embeddings().weight.zero_()
    path = str(ROOT / "data/sample/wiki_heldout_sample.jsonl")
    vocab = gem.model.config.vocab_size
    assert heldout_perplexity(gem, path, max_rows=10) == pytest.approx(vocab, rel=1e-5)
    assert heldout_perplexity(gem, path, max_rows=10, batch_size=3) == pytest.approx(vocab, rel=1e-5)


def test_perplexity_does_not_depend_on_batching_and_padding():
    gem = tiny_gem("llama", k=1, max_length=64)
    path = str(ROOT / "data/sample/wiki_heldout_sample.jsonl")
    one_by_one = heldout_perplexity(gem, path, max_rows=10, batch_size=1)
    assert heldout_perplexity(gem, path, max_rows=10, batch_size=10) == pytest.approx(one_by_one, rel=1e-4)
    assert one_by_one != pytest.approx(gem.model.config.vocab_size, rel=1e-2), "a random model is not uniform"


def test_train_logs_quick_eval(tmp_path):
    cfg = with_flat(tiny_cfg(tmp_path), eval_every=3, max_length=32)
    train(cfg, evaluate=partial(quick_eval, heldout=cfg.rows.heldout, max_rows=8))
    rows = [json.loads(l) for l in open(Path(cfg.run.output_dir) / "metrics.jsonl")]
    evals = [r for r in rows if "eval_heldout_ppl" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert all(np.isfinite(r["eval_lee50_spearman"]) for r in evals)
