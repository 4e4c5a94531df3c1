"""How much of a clustering score is the k-means draw? The suites' clustering tasks, over many seeds.

    python -m research.wide.clustering_seeds      # fp32; 12 min a model on a 2-core CPU beside another evaluation

The quick and wide suites scored clustering as mteb does: one Mini-Batch k-means (batch 500,
`n_init="auto"`, `random_state` 42) on the embeddings, v-measure against the labels. Between two close
models a single draw can decide the average. This embeds the texts of two clustering tasks once per
model (BBC headlines, 2,225, as in the wide suite; MMLU questions, 20 of each of 57 subjects), exactly
as the suite does (`lab.evaluation.embedders`, 192 tokens, fp32), and scores them with the same
k-means under `SEEDS` seeds: the mean, the spread, and seed 42 (mteb's single draw, what the suites
reported when this ran). The whole-article task is left out (2,225 articles: most of the wide suite's
time). What it found changed the lab: its suites now score every clustering task as the mean over
these 30 seeds (`lab.evaluation.tasks.kmeans_v_measures`, `TaskSizes.kmeans_draws`), this study's mean.
Writes `research/wide/results/clustering_seeds.json` and `.md`; a model's row is reused while its
weights are unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lab.evaluation.tasks import kmeans_v_measures as v_measures
from lab.storage import atomic_file
from ..rows import rows_per_weights, study_main

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "clustering_seeds"
MODELS = {"stage 1 (gem-smollm2-135m-gpu)": "gem-smollm2-135m-gpu",
          "stage 2 (gem-smollm2-135m-anchored)": "gem-smollm2-135m-anchored",
          "stage 3 (gem-smollm2-135m-stop)": "gem-smollm2-135m-stop",
          "all-MiniLM-L6-v2": "minilm"}
WIDE_RESULTS = {"stage 1 (gem-smollm2-135m-gpu)": HERE / "results" / "gem-gpu.json",  # `make wide-stages`
                "stage 2 (gem-smollm2-135m-anchored)": HERE / "results" / "gem-anchored.json",
                "stage 3 (gem-smollm2-135m-stop)": HERE / "results" / "gem-stop.json",
                "all-MiniLM-L6-v2": HERE / "results" / "minilm.json"}
TASKS = ("LocalBBCClustering", "LocalMMLUTopicClustering")
SEEDS = tuple(range(30))
SUITE_SEED = 42  # mteb's AbsTask default: the one draw every suite's clustering number was until this study
# (the lab's suites now score the mean over seeds 0-29, `lab.evaluation.tasks.TaskSizes.kmeans_draws`: this study's mean)
MAX_LENGTH = 192  # the quick and wide suites' tokens per text


def clustering_texts(data_dir=None) -> dict[str, tuple[list[str], list[str]]]:
    """{task: (texts, labels)} for `TASKS`, as the wide suite builds them."""
    from lab.evaluation.tasks import WIDE, task_rows

    rows = task_rows(WIDE, data_dir)
    return {task: rows[task] for task in TASKS}


def embedder_for(model: str):
    """The suite's embedder of a model: GEM's readout for a GEM checkpoint, the encoder for 'minilm'."""
    from lab.evaluation.embedders import gem_embedder, sentence_transformer_embedder
    from lab.weights.encoders import ENCODERS
    from lab.weights.loading import load

    if model in ENCODERS:
        return sentence_transformer_embedder(model)
    return gem_embedder(load(model, dtype="float32"), "gem", max_length=MAX_LENGTH)


def model_row(model: str, texts: dict, seeds=SEEDS, embedder=embedder_for) -> dict:
    """{task: {"suite_seed", "mean", "sd", "min", "max", "seeds"}} of one model."""
    emb = embedder(model)
    row = {}
    for task, (sentences, labels) in texts.items():
        vectors = emb.embed(list(sentences))
        scores = v_measures(vectors, labels, seeds)
        row[task] = {"suite_seed": v_measures(vectors, labels, [SUITE_SEED])[0], "mean": float(np.mean(scores)),
                     "sd": float(np.std(scores, ddof=1)), "min": min(scores), "max": max(scores), "seeds": scores}
    return row


def measure(models=MODELS, out=OUT, seeds=SEEDS, texts=None, row=model_row) -> dict:
    """{"settings", "rows": {label: {"model", "fingerprint", "tasks": model_row}}} -> `out`.json / .md."""
    settings = {"tasks": list(TASKS), "seeds": list(seeds), "suite_seed": SUITE_SEED, "max_length": MAX_LENGTH}
    texts = texts if texts is not None else clustering_texts()
    result = rows_per_weights(out.with_suffix(".json"), settings, models,
                              lambda model: {"tasks": row(model, texts, seeds)}, "clustering seeds")
    with atomic_file(out.with_suffix(".md"), "w") as f:
        f.write(report(result))
    return result


def report(result: dict) -> str:
    """Markdown: per model and task, the suite's draw (seed 42) and the mean ± sd [min, max] over the seeds."""
    s = result["settings"]
    tasks = s["tasks"]
    lines = [f"## Clustering scores over {len(s['seeds'])} k-means seeds (v-measure x100)", "",
             "Each cell: the suite's own draw (seed 42) · mean ± sd [min – max] over the seeds; the same "
             "embeddings throughout. `python -m research.wide.clustering_seeds`.", "",
             "| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for label, row in result["rows"].items():
        cells = [f"{100 * c['suite_seed']:.1f} · {100 * c['mean']:.1f} ± {100 * c['sd']:.1f} "
                 f"[{100 * c['min']:.1f} – {100 * c['max']:.1f}]" for c in (row["tasks"][t] for t in tasks)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    wide = wide_averages(result)
    if wide:
        lines += ["", "The wide suite's average (`research/wide/results/*.json`, seven tasks) as measured, and with "
                  "these two tasks at their mean over the seeds (the other five unchanged):", "",
                  "| model | wide avg, as measured | with the two clusterings' seed means | tasks won of 7 against each other model |",
                  "|---|---:|---:|---|"]
        for label, (measured, averaged, wins) in wide.items():
            won = ", ".join(f"{n} vs {other.split(' (')[0]}" for other, n in wins.items())
            lines.append(f"| {label} | {100 * measured:.2f} | {100 * averaged:.2f} | {won} |")
    return "\n".join(lines) + "\n"


def wide_averages(result: dict, files=None) -> dict[str, tuple[float, float, dict[str, int]]]:
    """{label: (the wide average as measured, the same with `TASKS` at their seed means, {other label:
    tasks of the seven this model scores higher on, seed means used})} for the models with a wide result."""
    files = WIDE_RESULTS if files is None else files
    scores = {}
    for label, row in result["rows"].items():
        path = Path(files.get(label, ""))
        if not path.is_file():
            continue
        tasks = json.loads(path.read_text())["rows"][0]["tasks"]
        scores[label] = (tasks, {**tasks, **{t: c["mean"] for t, c in row["tasks"].items() if t in tasks}})
    out = {}
    for label, (measured, averaged) in scores.items():
        wins = {other: sum(averaged[t] > theirs[1][t] for t in averaged) for other, theirs in scores.items() if other != label}
        out[label] = (sum(measured.values()) / len(measured), sum(averaged.values()) / len(averaged), wins)
    return out


def main(argv: list[str] | None = None) -> int:
    return study_main(__doc__, argv, lambda: report(measure()))


if __name__ == "__main__":
    raise SystemExit(main())
