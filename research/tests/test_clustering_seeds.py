"""The clustering-seed study: seed 42 is mteb's single draw, its mean is the suites' clustering score, rows are reused per weights."""

import json
import zlib

import numpy as np

from lab.evaluation.embedders import Embedder
from lab.evaluation.tasks import QUICK, build_tasks, run_tasks
from research.wide.clustering_seeds import SEEDS, measure, model_row, v_measures


def _texts(n: int = 60):
    rng = np.random.default_rng(0)
    labels = [f"topic{i % 3}" for i in range(n)]
    return [f"text {i} about {labels[i]} {rng.integers(1000)}" for i in range(n)], labels


def _embed(texts):
    """Three noisy blobs, by the topic named in the text (deterministic per text)."""
    out = []
    for t in texts:
        rng = np.random.default_rng(zlib.crc32(t.encode()))
        centre = np.eye(8)[int(t.split("topic")[1][0])]
        out.append(centre + 0.9 * rng.standard_normal(8))
    return np.array(out, dtype=np.float32)


def test_the_suite_reports_the_mean_over_the_studys_seeds():
    sentences, labels = _texts()
    embedder = Embedder("fake", "gem", _embed)
    suite = run_tasks(embedder, build_tasks(QUICK, {"LocalBBCClustering": (sentences, labels)}, ("LocalBBCClustering",)))
    ours = np.mean(v_measures(embedder.embed(sentences), labels, SEEDS))
    assert abs(suite["LocalBBCClustering"] - ours) < 1e-9
    spread = v_measures(embedder.embed(sentences), labels, range(10))
    assert len(set(round(s, 9) for s in spread)) > 1, "noisy blobs: the k-means draw moves the score"


def test_rows_hold_every_seed_and_are_reused_while_the_weights_are_unchanged(tmp_path):
    texts = {"LocalBBCClustering": _texts(), "LocalMMLUTopicClustering": _texts(45)}
    calls = []

    def row(model, texts, seeds):
        calls.append(model)
        return model_row(model, texts, seeds, embedder=lambda m: Embedder(m, "gem", _embed))

    out = tmp_path / "seeds"
    result = measure({"fake model": "no-such-folder"}, out, seeds=range(5), texts=texts, row=row)
    cell = result["rows"]["fake model"]["tasks"]["LocalBBCClustering"]
    assert len(cell["seeds"]) == 5 and cell["min"] <= cell["mean"] <= cell["max"] and cell["sd"] >= 0
    assert "| fake model | " in out.with_suffix(".md").read_text()
    measure({"fake model": "no-such-folder"}, out, seeds=range(5), texts=texts, row=row)
    assert calls == ["no-such-folder"], "same weights: reused"
    saved = json.loads(out.with_suffix(".json").read_text())
    saved["rows"]["fake model"]["fingerprint"] = "older"
    out.with_suffix(".json").write_text(json.dumps(saved))
    measure({"fake model": "no-such-folder"}, out, seeds=range(5), texts=texts, row=row)
    assert calls == ["no-such-folder"] * 2, "changed weights: measured again"


def test_wide_averages_swap_in_the_seed_means_and_count_tasks_won(tmp_path):
    from research.wide.clustering_seeds import wide_averages

    def wide(path, **tasks):
        path.write_text(json.dumps({"rows": [{"tasks": tasks}]}))
        return path

    files = {"a": wide(tmp_path / "a.json", LocalBBCClustering=0.40, Other=0.90),
             "b": wide(tmp_path / "b.json", LocalBBCClustering=0.45, Other=0.80)}
    result = {"rows": {"a": {"tasks": {"LocalBBCClustering": {"mean": 0.50}}},
                       "b": {"tasks": {"LocalBBCClustering": {"mean": 0.44}}},
                       "c": {"tasks": {"LocalBBCClustering": {"mean": 0.30}}}}}
    out = wide_averages(result, files)
    assert set(out) == {"a", "b"}, "no wide result: no row"
    assert out["a"][0] == (0.40 + 0.90) / 2 and out["a"][1] == (0.50 + 0.90) / 2
    assert out["a"][2] == {"b": 2} and out["b"][2] == {"a": 0}
