"""How much of the transfer table's sentiment score is the cross-validation split?

    python -m research.wide.sentiment_splits      # fp32; about a minute a model on a 2-core CPU

`lab.evaluation.transfer` scored Pang & Lee sentiment as the accuracy of a logistic regression on the
embeddings of 200 movie-review sentences, 5-fold, one stratified split (seed 0). With 160 training
sentences a fold and 384 dimensions, which sentences land in which fold moves the score: stage 4 of the
shipped model read 74.5 there against stage 3's 80.0. This embeds the sentences once per model, exactly
as the transfer table does, and repeats the 5-fold cross-validation under `SEEDS` split seeds: the
table's old split, the mean, the spread, and the paired difference to the shipped model over the 200
sentences (each sentence's share of seeds on which it was classified right). What it found changed the
lab: the transfer table now scores the mean over these 50 splits (`lab.evaluation.transfer.SENTIMENT_SPLITS`),
this study's mean. Writes
`research/wide/results/sentiment_splits.json` and `.md`; a model's row is reused while its weights are
unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lab.evaluation.transfer import SENTIMENT_SPLITS, sentiment_right
from lab.storage import atomic_file
from ..rows import rows_per_weights, study_main

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "sentiment_splits"
MODELS = {"SmolLM2-135M, echo pooling": "smollm2-135m",
          "stage 1 (gem-smollm2-135m-gpu)": "gem-smollm2-135m-gpu",
          "stage 2 (gem-smollm2-135m-anchored)": "gem-smollm2-135m-anchored",
          "stage 3 (gem-smollm2-135m-stop)": "gem-smollm2-135m-stop",
          "stage 4 (gem-smollm2-135m-contrast)": "gem-smollm2-135m-contrast",
          "stage 5 (gem-smollm2-135m-mixed)": "gem-smollm2-135m-mixed",
          "stage 6 (gem-smollm2-135m, shipped)": "gem-smollm2-135m",
          "all-MiniLM-L6-v2": "minilm"}
SHIPPED = "stage 6 (gem-smollm2-135m, shipped)"
SEEDS = SENTIMENT_SPLITS  # the transfer table's splits: its score is this study's mean
TABLE_SEED = 0  # the one split the transfer table used before it averaged (until 2026-12-06)


def embedder_for(model: str):
    """The transfer table's embedder of `model`: the encoder for 'minilm', echo pooling for the base model
    (its best), else GEM's readout."""
    from lab.evaluation.transfer import transfer_embedder
    from lab.weights.encoders import ENCODERS

    if model in ENCODERS:
        return transfer_embedder(model, None)
    loaded: dict = {}
    readout = transfer_embedder(model, None, loaded=loaded)
    return readout if loaded[model].is_gem else transfer_embedder(model, "echo", loaded=loaded)


def model_row(model: str, texts: list[str], labels: list[int], seeds=SEEDS, embedder=embedder_for) -> dict:
    """{"table_split", "mean", "sd", "min", "max", "per_sentence"} of one model: accuracies over the
    split seeds, and each sentence's share of seeds on which it was classified right."""
    right = sentiment_right(np.asarray(embedder(model).embed(list(texts))), labels, seeds=seeds)
    acc = right.mean(1)
    return {"table_split": float(acc[list(seeds).index(TABLE_SEED)]) if TABLE_SEED in seeds else None,
            "mean": float(acc.mean()), "sd": float(acc.std(ddof=1)), "min": float(acc.min()), "max": float(acc.max()),
            "per_sentence": right.mean(0).tolist()}


def paired_difference(a: dict, b: dict) -> tuple[float, float]:
    """(mean, standard error) of b's minus a's per-sentence share right: the accuracy difference with
    the same sentences on both sides."""
    d = np.asarray(b["per_sentence"]) - np.asarray(a["per_sentence"])
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def measure(models=MODELS, out=OUT, seeds=SEEDS, data=None, row=model_row, shipped: str = SHIPPED) -> dict:
    """{"settings", "rows": {label: {"model", "fingerprint", **model_row}}} -> `out`.json / .md."""
    from lab.evaluation.transfer import transfer_data

    texts, labels = data if data is not None else transfer_data()["Pang-Lee sentiment"]
    settings = {"source": "gensim test_data/pang_lee_polarity.cor", "seeds": list(seeds), "folds": 5,
                "table_seed": TABLE_SEED, "dtype": "float32"}
    result = rows_per_weights(out.with_suffix(".json"), settings, models,
                              lambda model: row(model, texts, labels, seeds), "sentiment splits")
    with atomic_file(out.with_suffix(".md"), "w") as f:
        f.write(report(result, shipped))
    return result


def report(result: dict, shipped: str = SHIPPED) -> str:
    """Markdown: per model, the table's split, the mean ± sd [min – max] over the seeds, and the paired
    difference of the shipped model against it."""
    s = result["settings"]
    rows = result["rows"]
    lines = [f"## Pang & Lee sentiment over {len(s['seeds'])} cross-validation splits (accuracy x100)", "",
             f"{s['folds']}-fold logistic regression on the same embeddings under each split seed; seed "
             f"{s['table_seed']} was the transfer table's one split, the mean is its score now. Paired: the shipped model minus this one, over the "
             "same sentences (each sentence's share of splits classified right), ± one standard error. "
             "`python -m research.wide.sentiment_splits`.", "",
             "| model | the table's old split | mean ± sd [min – max] over the splits | shipped minus this (paired) |",
             "|---|---:|---:|---:|"]
    for label, r in rows.items():
        paired = "–"
        if shipped in rows and label != shipped:
            diff, se = paired_difference(r, rows[shipped])
            paired = f"{100 * diff:+.1f} ± {100 * se:.1f}"
        table = "–" if r["table_split"] is None else f"{100 * r['table_split']:.1f}"
        lines.append(f"| {label} | {table} | {100 * r['mean']:.1f} ± {100 * r['sd']:.1f} "
                     f"[{100 * r['min']:.1f} – {100 * r['max']:.1f}] | {paired} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return study_main(__doc__, argv, lambda: report(measure()))


if __name__ == "__main__":
    raise SystemExit(main())
