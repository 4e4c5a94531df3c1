"""The trade-off table: one row per model, reused while the weights are unchanged, redone when they change."""

import json

from research.reconstruction.tradeoff import tradeoff, tradeoff_table
from lab.training.tiny_run import tiny_gem_checkpoint


def test_rows_are_measured_once_per_weights_and_tabulated(tmp_path):
    ckpt = tiny_gem_checkpoint(str(tmp_path / "run"), steps=2)
    calls = []

    def reconstruct(model, heldout, lengths, per_length):
        calls.append(model)
        return {"exact": {str(n): 0.5 for n in lengths}, "token_accuracy": {str(n): 0.75 for n in lengths},
                "count": {str(n): per_length for n in lengths}}

    def suite(model):
        calls.append("suite")
        return {"embedding_avg": 0.6, "perplexity": 10.0, "perplexity_ood": 20.0}

    models = {"base run": {"checkpoint": ckpt},
              "further": {"checkpoint": ckpt, "final": {"embedding_avg": 0.7, "perplexity": 9.0, "perplexity_ood": 19.0},
                          "config": "research/reconstruction/configs/x.yaml", "step": 5, "train_s": 120.0}}
    out = tmp_path / "tradeoff"
    result = tradeoff(models, "heldout.jsonl", out, lengths=(8,), per_length=4, reconstruct=reconstruct, suite=suite)
    assert calls == [ckpt, "suite", ckpt] or calls == ["suite", ckpt, ckpt]
    assert result["rows"]["further"]["embedding_avg"] == 0.7 and result["rows"]["base run"]["embedding_avg"] == 0.6
    table = tradeoff_table(result)
    assert list(result["rows"]) == ["base run", "further"], "rows in the order the models are given"
    assert "| base run | – | 60.0 | 50 | 75.0 | 10.00 / 20.00 |" in table
    assert "| further | `research/reconstruction/configs/x.yaml`, 5 steps, 2 min | 70.0 |" in table
    assert out.with_suffix(".md").read_text().endswith(table)
    figure = out.with_suffix(".html").read_text()
    assert "further · exact@8 50 %" in figure and "embedding target (65)" in figure

    calls.clear()
    tradeoff(models, "heldout.jsonl", out, lengths=(8,), per_length=4, reconstruct=reconstruct, suite=suite)
    assert calls == [], "unchanged weights: rows reused"
    saved = json.loads(out.with_suffix(".json").read_text())
    saved["rows"]["base run"]["fingerprint"] = "older weights"
    out.with_suffix(".json").write_text(json.dumps(saved))
    tradeoff(models, "heldout.jsonl", out, lengths=(8,), per_length=4, reconstruct=reconstruct, suite=suite)
    assert calls == ["suite", ckpt], "changed weights: that row again"
