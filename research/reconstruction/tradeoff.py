"""Reconstruction against embedding: the GPU recipe's model and runs trained further from it, side by side.

    python -m research.reconstruction.tradeoff      # make reconstruction-tradeoff

In the GPU recipe's runs reconstruction peaked at the end of the reconstruction phase and wore down
in the contrastive phase (gpu-a; gpu-b, the shipped model's stage 1, stayed flat through it: README,
"Reconstruction"). The runs of `RUNS` (`research/reconstruction/configs/`) start from gpu-b's weights
(`init_from: gem-smollm2-135m-gpu`) and train on reconstruction rows of random length: one with the
contrastive and distillation terms on (`keep-reconstruction`), one with nothing holding the embedding
(`reconstruction-from-shipped`, named when gpu-b was the shipped model), and that one again with the
anchor term holding the embedding to gpu-b's (`anchored-reconstruction`, `TrainConfig.anchor_weight`;
`-w2` a weaker anchor, chosen as the shipped model's stage 2, `configs/gem-smollm2-135m-anchored.yaml`;
`-w2-more` that run trained further). Each run is trained (or resumed, or reused) and its checkpoints
get the reconstruction curve of `research.reconstruction.budget` (16 texts per length, and the
ablations' suite on its last checkpoint); then every model here, stage 1 included, is reconstructed
on 32 held-out texts per length (`per_length`), and the table puts the embedding average, both
perplexities and reconstruction in one row per model: `research/reconstruction/results/reconstruction_tradeoff.md` (+ `.json`,
and `.html`: embedding against reconstruction with the targets; a model's row is reused while its
weights are unchanged).
"""

from __future__ import annotations

import argparse
import json
import logging

from lab.storage import PROJECT_ROOT, atomic_file, write_json_atomic
from lab.training.config import TrainConfig
from lab.training.config_files import config_from_args
from .budget import EXPERIMENTS, RESULTS, final_suite, out_for, reconstruction_curve

log = logging.getLogger(__name__)

STAGE1 = "gem-smollm2-135m-gpu"  # the GPU recipe's model, where every run here starts
SHIPPED_RUN = "anchored-reconstruction-w2"  # its checkpoint-300 ships as gem-smollm2-135m-anchored (stage 2)
RUNS = ("keep-reconstruction", "reconstruction-from-shipped", "anchored-reconstruction",
        "anchored-reconstruction-w2", "anchored-reconstruction-w2-more")
OUT = RESULTS / "reconstruction_tradeoff"
LENGTHS = (8, 16)
PER_LENGTH = 32


def reconstruction_of(model: str, heldout: str, lengths=LENGTHS, per_length: int = PER_LENGTH) -> dict:
    """{"exact": {n: share}, "token_accuracy": {n: share}, "count": {n: texts}} of one model."""
    from lab.evaluation.language import reconstruction_by_length
    from lab.weights.loading import load

    return json.loads(json.dumps(reconstruction_by_length(load(model), heldout, lengths, per_length)))


def run_models(runs=RUNS) -> dict[str, dict]:
    """{run name: {"checkpoint", "final" (the curve's suite on it), "train_s", "config"}}, each run
    trained and its curve evaluated as needed."""
    out = {}
    for name in runs:
        config = EXPERIMENTS / f"{name}.yaml"
        curve = reconstruction_curve(config, out_for(config))
        step = curve["final"]["step"]  # the run's last checkpoint
        ckpt = PROJECT_ROOT / config_from_args(str(config), []).output_dir / f"checkpoint-{step}"
        out[name] = {"checkpoint": str(ckpt), "final": curve["final"], "train_s": curve.get("train_s"),
                     "config": f"research/reconstruction/configs/{name}.yaml", "step": step}
    return out


def tradeoff(models: dict[str, dict], heldout: str, out=OUT, lengths=LENGTHS, per_length: int = PER_LENGTH,
             reconstruct=reconstruction_of, suite=final_suite) -> dict:
    """{"settings", "rows": {label: row}}: each model's suite (given, or measured with `suite`) and its
    reconstruction on `per_length` texts per length. models: {label: {"checkpoint"[, "final", ...]}}.
    A row is reused while its model's weights fingerprint and the settings are unchanged."""
    from lab.weights.loading import weights_fingerprint

    target = out.with_suffix(".json")
    settings = {"lengths": list(lengths), "per_length": per_length, "heldout": heldout}
    result = json.loads(target.read_text()) if target.is_file() else {}
    if result.get("settings") != settings:
        result = {"settings": settings, "rows": {}}
    for label, model in models.items():
        fingerprint = weights_fingerprint(model["checkpoint"])
        row = result["rows"].get(label)
        if row and row.get("fingerprint") == fingerprint:
            continue
        log.info("reconstruction trade-off: %s", label)
        final = model.get("final") or suite(model["checkpoint"])
        row = {**{k: v for k, v in model.items() if k != "final"}, "fingerprint": fingerprint,
               "embedding_avg": final.get("embedding_avg"), "perplexity": final.get("perplexity"),
               "perplexity_ood": final.get("perplexity_ood"),
               "reconstruction": reconstruct(model["checkpoint"], heldout, lengths, per_length)}
        result["rows"][label] = row
        write_json_atomic(target, result)
    result["rows"] = {**{label: result["rows"][label] for label in models}, **result["rows"]}  # table in models' order
    write_json_atomic(target, result)
    with atomic_file(out.with_suffix(".md"), "w") as f:
        f.write(tradeoff_report(result))
    with atomic_file(out.with_suffix(".html"), "w") as f:
        f.write(reconstruction_figure(result).to_html(include_plotlyjs=True, full_html=True))
    return result


def reconstruction_figure(result: dict):
    """plotly Figure: embedding average (y) vs token accuracy at the longest length (x), one point
    per model (labelled with its exact match at the shortest), and the issue's targets as lines:
    a model in the top-right corner would meet both."""
    from lab.viz.figures import tradeoff_figure

    lengths = [str(n) for n in result["settings"]["lengths"]]
    short, long_ = lengths[0], lengths[-1]
    points = [{"label": f"{label.split(' (')[0]} · exact@{short} {100 * row['reconstruction']['exact'].get(short, 0):.0f} %",
               "perplexity": 100 * row["reconstruction"]["token_accuracy"].get(long_, 0),  # the x axis
               "score": 100 * row["embedding_avg"]}
              for label, row in result["rows"].items() if row.get("embedding_avg") is not None]
    fig = tradeoff_figure(points, title="Reconstruction against embedding: the GPU recipe's model and runs trained further from it",
                  series="models", lines=False)
    fig.add_hline(y=65, line_dash="dot", annotation_text="embedding target (65)")
    fig.add_vline(x=50, line_dash="dot", annotation_text=f"token accuracy target (50 % @{long_})")
    fig.update_layout(xaxis_title=f"token accuracy @{long_}, greedy from S alone (%)",
                      yaxis_title="quick embedding average, 64-token texts")
    return fig


def tradeoff_table(result: dict) -> str:
    """Markdown, one row per model."""
    lengths = [str(n) for n in result["settings"]["lengths"]]
    head = ["model", "trained from it", "emb. avg (64 tok)", *[f"{kind} @{n}" for n in lengths
                                                               for kind in ("exact", "token acc.")],
            "ppl Wikipedia / news"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for label, row in result["rows"].items():
        rec = row["reconstruction"]
        trained = (f"`{row['config']}`, {row['step']} steps" + (f", {row['train_s'] / 60:.0f} min" if row.get("train_s") else "")
                   if row.get("config") else "–")
        cells = [label, trained, "–" if row.get("embedding_avg") is None else f"{100 * row['embedding_avg']:.1f}"]
        for n in lengths:
            cells += [f"{100 * rec['exact'].get(n, 0):.0f}", f"{100 * rec['token_accuracy'].get(n, 0):.1f}"]
        cells.append(" / ".join(f"{row[k]:.2f}" if row.get(k) else "–" for k in ("perplexity", "perplexity_ood")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tradeoff_report(result: dict) -> str:
    s = result["settings"]
    return ("# Reconstruction against embedding, from the GPU recipe's model\n\n"
            f"The GPU recipe's GEM model (`{STAGE1}`, the shipped model's stage 1) and runs trained further from its "
            f"weights (`python -m "
            "research.reconstruction.tradeoff`, `make reconstruction-tradeoff`). Reconstruction: greedy, from "
            f"the GEM tokens' cache alone, {s['per_length']} held-out Wikipedia texts per length "
            f"({', '.join(map(str, s['lengths']))} tokens); exact = the whole text back. Embedding average: the "
            "ablations' suite (`results/ablations.md`: the quick suite's tasks with texts cut to 64 tokens, so it "
            "differs from results/report.md's, made at 192); perplexity on held-out Wikipedia (the training "
            "domain) and BBC News (out of domain). Each run's checkpoints: `research/reconstruction/results/<run>.md`. "
            f"`{SHIPPED_RUN}` at its last checkpoint is the shipped model's stage 2, `gem-smollm2-135m-anchored` ("
            "`configs/gem-smollm2-135m-anchored.yaml`).\n\n"
            + tradeoff_table(result))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="*", default=list(RUNS), help=f"runs in research/reconstruction/configs/ (default: {RUNS})")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    runs = run_models(args.runs)
    heldout = str(PROJECT_ROOT / TrainConfig().heldout)
    models = {f"{STAGE1} (stage 1)": {"checkpoint": STAGE1}, **runs}
    print(tradeoff_table(tradeoff(models, heldout)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
