"""The app's "what training buys and costs" view, read from the measured result files.

Nothing here is typed in: the tables come from the JSON files `lab eval` wrote under results/
(remade by `make results`, `make mmlu`; see results/report.md), the training time from the
checkpoints' own `metrics.jsonl`, and the run-time cost from the loaded model.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..evaluation.report import language_cost_table, load_results, markdown_table, table_rows, task_bars
from ..storage import PROJECT_ROOT
from ..weights.registry import DEFAULT_GEM, SHIPPED_FROM, SHIPPED_GEM, SHIPPED_TRAINED_ON
from .handlers import Session

RESULTS = PROJECT_ROOT / "results"
# each shipped model's result files, relative to results/: embedding (its base model with every pooling,
# GEM, the teacher encoder), language (MMLU runs on the same 400 questions), perplexity (runs with both
# perplexities, where the MMLU runs lack one)
SHIPPED_RESULTS = {
    "gem-smollm2-135m": {"embedding": ("base.json", "gem.json", "minilm.json"),
                         "language": ("mmlu-base.json", "mmlu-gem.json"),
                         "perplexity": ("perplexity-base.json", "perplexity-gem.json")},
    "gem-gemma3-270m": {"embedding": ("gemma3-270m/base.json", "gemma3-270m/gem.json", "minilm.json"),
                        "language": ("gemma3-270m/base.json", "gemma3-270m/mmlu-gem.json"),
                        "perplexity": ()},
}


def _logged_run(folder: Path) -> tuple[int, float] | None:
    """(steps, seconds) from a checkpoint's metrics.jsonl: the last logged step, and the wall time
    summed over the run's segments (a resumed run's clock starts again from 0), or None."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return None
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not lines or "elapsed_s" not in lines[-1]:
        return None
    seconds, previous = 0.0, 0.0
    for line in lines:
        if line["elapsed_s"] < previous:  # a resume: the segment before ended at `previous`
            seconds += previous
        previous = line["elapsed_s"]
    return int(lines[-1]["step"]), seconds + previous


def training_stages(folder: Path) -> list[str]:
    """One line per training stage of a checkpoint, oldest first: its steps, logged wall time and
    hardware. A shipped model trained on from another shipped one (`SHIPPED_FROM`) adds that one's."""
    by_folder = {p.resolve(): name for name, p in SHIPPED_GEM.items()}
    lines, name = [], by_folder.get(folder.resolve())
    while folder is not None:
        run = _logged_run(folder)
        if run:
            where = f" on {SHIPPED_TRAINED_ON[name]}" if name in SHIPPED_TRAINED_ON else ""
            lines.insert(0, f"{name or folder.name}: {run[0]} steps in {run[1] / 60:.1f} min{where}")
        name = SHIPPED_FROM.get(name)
        folder = SHIPPED_GEM.get(name)
    return lines


def runtime_cost(gem) -> str:
    """What the GEM model adds at run time, from the loaded model and its checkpoint folder."""
    cfg, folder = gem.gem_config, Path(gem.name)
    adapter = folder / "adapter" / "adapter_model.safetensors"
    parts = [f"{cfg.k} extra tokens per text in the prefill (the S tokens; plus the sink in front)"
             if cfg.sink_token else f"{cfg.k} extra tokens per text in the prefill (the S tokens)"]
    if adapter.is_file():
        parts.append(f"a LoRA adapter of {adapter.stat().st_size / 1e6:.1f} MB")
    head = getattr(gem, "readout_head", None)
    if head is not None:
        parts.append(f"a readout head of {sum(p.numel() for p in head.parameters()):,} weights "
                     f"({head.linear.in_features} → {head.out_dim})")
    return "; ".join(parts)


def _with_perplexities(results: list[dict], perplexities: list[dict]) -> list[dict]:
    """`results` with each missing perplexity taken from the perplexity run of the same label."""
    by_label = {r["label"]: r for r in perplexities}
    out = []
    for r in results:
        other = by_label.get(r["label"], {})
        out.append({**r, **{k: other[k] for k in ("perplexity", "perplexity_ood") if not r.get(k) and other.get(k)}})
    return out


def shipped_name(gem) -> str | None:
    """The shipped name of the loaded GEM model (its folder is a shipped checkpoint's), or None."""
    where = Path(gem.name).resolve()
    return next((name for name, path in SHIPPED_GEM.items() if path.resolve() == where), None)


def _files(results: Path, names) -> list[Path]:
    return [results / f for f in names if (results / f).is_file()]


def training_view(session: Session, results: Path = RESULTS) -> dict:
    """{"buys": Markdown, "bars": figure, "costs": Markdown} for the loaded GEM model when it ships
    with measured results (`SHIPPED_RESULTS`), else for the default shipped model, saying so."""
    _, gem = session.models()
    loaded = shipped_name(gem)
    shown = loaded if loaded in SHIPPED_RESULTS else DEFAULT_GEM
    files = SHIPPED_RESULTS[shown]
    emb = load_results(_files(results, files["embedding"]))
    lang = _with_perplexities(load_results(_files(results, files["language"])),
                              load_results(_files(results, files["perplexity"])))
    if not emb:
        raise FileNotFoundError(f"no result files for {shown} in {results}: run `make eval-report` (about "
                                f"45 min on 2 cores) and `make eval-mmlu`")
    note = "" if loaded == shown else \
        (f"\n\n⚠ These numbers were measured for **{shown}**, not for the model loaded now; measure yours with "
         f"`python -m lab eval --model {gem.name} --output results/mine.json`.")
    rows = table_rows(emb)
    buys = ("Scores ×100 on the lab's quick suite (five local tasks), the base model with each pooling, GEM, "
            f"and the teacher encoder its readout was pulled towards. From {', '.join(files['embedding'])} "
            "in results/.\n\n" + markdown_table(rows, language=False) + note)
    cost_lines = [language_cost_table(lang) or "(no paired MMLU results: run `make eval-mmlu`)", "",
                  "**Training** (wall time logged in each checkpoint's metrics.jsonl): "
                  + ("; then ".join(training_stages(SHIPPED_GEM[shown])) or "no metrics.jsonl with the checkpoint"),
                  "", "**At run time**: " + runtime_cost(gem)]
    return {"buys": buys, "bars": task_bars(rows), "costs": "\n".join(cost_lines)}
