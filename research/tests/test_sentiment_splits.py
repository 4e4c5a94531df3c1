"""The sentiment-split study: its mean over the splits is the transfer table's score, the splits move it,
and the paired difference is the accuracy difference over the same sentences."""

import zlib

import numpy as np

from lab.evaluation.embedders import Embedder
from lab.evaluation.transfer import sentiment_accuracy
from research.wide.sentiment_splits import TABLE_SEED, measure, model_row, paired_difference, report


def _data(n: int = 60):
    labels = [i % 2 for i in range(n)]
    return [f"review {i} {'good' if labels[i] else 'bad'}" for i in range(n)], labels


def _embed(texts, signal: float = 0.6):
    """Two noisy blobs, by the word in the text (deterministic per text)."""
    out = []
    for t in texts:
        rng = np.random.default_rng(zlib.crc32(t.encode()))
        out.append(signal * np.eye(6)[int("good" in t)] + rng.standard_normal(6))
    return np.array(out, dtype=np.float32)


def test_the_tables_split_is_the_transfer_score_and_the_splits_move_it():
    texts, labels = _data()
    embedder = Embedder("fake", "gem", _embed)
    row = model_row("fake", texts, labels, seeds=range(8), embedder=lambda model: embedder)
    assert abs(row["table_split"] - sentiment_accuracy(embedder, texts, labels, seeds=[TABLE_SEED])) < 1e-12
    assert abs(row["mean"] - sentiment_accuracy(embedder, texts, labels, seeds=range(8))) < 1e-12, "the table's score now"
    assert row["min"] < row["max"], "noisy blobs: the split moves the score"
    assert abs(np.mean(row["per_sentence"]) - row["mean"]) < 1e-12, "each split scores every sentence once"


def test_the_paired_difference_and_the_report(tmp_path):
    texts, labels = _data()
    strong = Embedder("strong", "gem", lambda t: _embed(t, 3.0))
    weak = Embedder("weak", "gem", lambda t: _embed(t, 0.0))
    rows = {"weak": "weak", "shipped": "strong"}
    result = measure(rows, tmp_path / "splits", seeds=range(5), data=(texts, labels),
                     row=lambda model, x, y, seeds: model_row(model, x, y, seeds, lambda m: {"weak": weak, "strong": strong}[m]),
                     shipped="shipped")
    diff, se = paired_difference(result["rows"]["weak"], result["rows"]["shipped"])
    assert abs(diff - (result["rows"]["shipped"]["mean"] - result["rows"]["weak"]["mean"])) < 1e-12 and diff > 2 * se
    md = report(result, shipped="shipped")
    assert f"{100 * diff:+.1f} ± {100 * se:.1f}" in md and (tmp_path / "splits.md").read_text() == md
