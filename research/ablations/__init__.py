"""The ablation study: every config in `research/ablations/configs/` trained at one reduced budget, evaluated
the same way, tabulated with the base model's rows.

    python -m research.ablations                       # every research/ablations/configs/*.yaml (done ones are reused)
    python -m research.ablations --only reference,sink # some of them
    make ablations

Each ablation config starts from `research/ablations/configs/reference.yaml` (the recipe at reduced scale)
and changes one thing. Per config: train (an interrupted run resumes; a finished run is not
trained again), then the ablation suite — the quick suite's embedding tasks with texts cut to 64
tokens, perplexity on held-out Wikipedia (the training domain) and on BBC News (out of domain),
reconstruction at 8 and 16 tokens, where the suffix's attention goes; no MMLU (too slow per row) — saved
atomically to `results/ablations/NAME.json` with the training wall time and what the config changes.
Then `results/ablations.md` (the table) and `results/ablations.html` (embedding score vs
out-of-domain perplexity, one point per ablation, the base model as a star).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from lab.evaluation.suite import SUITES, run_suite
from lab.storage import PROJECT_ROOT, atomic_file, write_json_atomic
from lab.training.config import TrainConfig
from lab.training.config_files import config_diff, config_from_args
from lab.training.loop import train
from lab.viz.figures import ablation_figure
from lab.training.state import latest_checkpoint

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE / "configs"
RESULTS = PROJECT_ROOT / "results" / "ablations"
REFERENCE = "reference"
# The quick suite's tasks and sizes with texts cut to 64 tokens, 100 Wikipedia perplexity rows,
# reconstruction at 8 and 16 tokens; the base rows are measured under the same suite.
SUITE = dataclasses.replace(SUITES["quick"], name="ablation", max_length=64, mmlu_limit=0, perplexity_rows=100,
                            reconstruction_lengths=(8, 16), reconstruction_per_length=16)
BASE_POOLINGS = ("mean", "echo")
# What each row asks, in the order the table shows them (rows not named here follow, by name).
QUESTIONS = {
    "reference": "the GEM-only recipe, reduced",
    "seed-1": "run-to-run noise",
    "k2": "how many special tokens",
    "k5": "how many special tokens",
    "plain-0.5": "share of plain NTP rows",
    "plain-0.95": "share of plain NTP rows",
    "continuation": "continuation vs reconstruction rows",
    "mixed-rows": "continuation vs reconstruction rows",
    "no-contrastive": "with / without the contrastive phase",
    "lr-cl-2e-4": "contrastive learning rate",
    "alpha-1": "α schedule",
    "paper-positive": "dropout vs article positives",
    "frozen-head": "frozen backbone + readout head",
    "sink": "attention sink (beyond the paper)",
    "distill": "distillation from MiniLM (beyond the paper)",
    "distill-embedding": "distillation from MiniLM (beyond the paper)",
}


def ablation_configs(only: list[str] | None = None, config_dir: Path = CONFIG_DIR) -> dict[str, Path]:
    """{name: yaml path} of the ablations (reference first), or those named in `only`, in its order."""
    paths = {p.stem: p for p in sorted(config_dir.glob("*.yaml"))}
    if only:
        unknown = sorted(set(only) - set(paths))
        if unknown:
            raise ValueError(f"no ablation config named {unknown} in {config_dir}; known: {', '.join(paths)}")
        return {n: paths[n] for n in only}  # in the order given
    return dict(sorted(paths.items(), key=lambda kv: (kv[0] != REFERENCE, kv[0])))


def trained_checkpoint(cfg: TrainConfig) -> tuple[Path, float | None]:
    """(final checkpoint, training wall seconds or None when unknown); trains or resumes the run in
    `cfg.run.output_dir` as needed (the wall time is kept in the run folder, `train_wall_s.json`)."""
    out = PROJECT_ROOT / cfg.run.output_dir
    last = latest_checkpoint(out)
    wall = out / "train_wall_s.json"
    if last is not None and int(last.name.split("-")[1]) >= cfg.optim.steps:
        return last, (json.loads(wall.read_text())["train_s"] if wall.is_file() else None)
    cfg = cfg.updated({"run.output_dir": str(out)})
    t0 = time.perf_counter()
    ckpt = Path(train(cfg, resume=last is not None))
    seconds = time.perf_counter() - t0
    if int(ckpt.name.split("-")[1]) < cfg.optim.steps:  # Ctrl-C / SIGTERM: train() saved and returned early
        raise KeyboardInterrupt(f"{cfg.run.output_dir}: training stopped at {ckpt.name} of {cfg.optim.steps} steps; "
                                f"run the ablations again to resume it (nothing was evaluated)")
    resumed = last is not None
    write_json_atomic(wall, {"train_s": seconds, "resumed": resumed,
                             **({"note": "resumed: the wall time of the last part only"} if resumed else {})})
    return ckpt, seconds


def run_ablation(name: str, path: Path, results_dir: Path = RESULTS) -> dict:
    """Train and evaluate one ablation; its result file is reused when it exists."""
    target = results_dir / f"{name}.json"
    if target.is_file():
        result = json.loads(target.read_text())
        if "suffix_attention" not in result:  # a row from before this measurement: add it
            result["suffix_attention"] = _suffix_attention(result["model"])
            write_json_atomic(target, result)
        return result
    cfg = config_from_args(str(path), [])
    reference = config_from_args(str(path.parent / f"{REFERENCE}.yaml"), [])
    ckpt, train_s = trained_checkpoint(cfg)
    wall = PROJECT_ROOT / cfg.run.output_dir / "train_wall_s.json"
    note = json.loads(wall.read_text()).get("note") if wall.is_file() else None
    result = run_suite(str(ckpt), suite=SUITE, label=name, skip=("mmlu",), partial=results_dir / f"{name}.partial.json")
    result["suffix_attention"] = _suffix_attention(str(ckpt))
    result["ablation"] = {"name": name, "changes": config_diff(cfg, reference), "train_s": train_s, "train_note": note,
                          "steps": cfg.optim.steps, "config": str(path.relative_to(PROJECT_ROOT))}
    write_json_atomic(target, result)
    (results_dir / f"{name}.partial.json").unlink(missing_ok=True)
    return result


def _suffix_attention(checkpoint: str) -> dict:
    """Where the trained model's suffix tokens look (`lab.evaluation.language.suffix_attention`)."""
    from lab.evaluation.language import suffix_attention
    from lab.weights.loading import load

    return suffix_attention(load(checkpoint), str(PROJECT_ROOT / TrainConfig().heldout))


def base_result(results_dir: Path = RESULTS) -> dict:
    """The untrained base model under the same suite (mean and echo pooling, both perplexities)."""
    target = results_dir / "base.json"
    if target.is_file():
        return json.loads(target.read_text())
    result = run_suite(TrainConfig().model, poolings=list(BASE_POOLINGS), suite=SUITE, label="base (no training)",
                       skip=("mmlu", "reconstruction"), partial=results_dir / "base.partial.json")
    write_json_atomic(target, result)
    (results_dir / "base.partial.json").unlink(missing_ok=True)
    return result


def _cell(x, scale: float = 100.0, digits: int = 1) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


def _changes(result: dict) -> str:
    changes = result.get("ablation", {}).get("changes") or {}
    text = ", ".join(f"{k}={v}" for k, v in changes.items()) or "(the reduced recipe)"
    return text.replace("|", "\\|")  # a literal pipe would split the Markdown cell


def table_order(name: str) -> tuple[int, str]:
    """Sort key: the rows of `QUESTIONS` in its order, then any other ablation by name."""
    order = list(QUESTIONS)
    return (order.index(name) if name in order else len(order), name)


def ablation_table(results: list[dict], base: dict) -> str:
    """Markdown: one row per base pooling, then one per ablation (in `table_order`)."""
    from lab.evaluation.tasks import SHORT_NAMES, TASK_NAMES

    head = ["run", "question", "changes", *[SHORT_NAMES[t] for t in TASK_NAMES], "emb. avg", "ppl Wikipedia",
            "ppl news (Δ % vs base)", "recon. exact @8", "token acc. @16", "suffix→S attn", "train min"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    ppl_news_base = base.get("perplexity_ood")
    for row in base["rows"]:
        lines.append("| " + " | ".join([f"base · {row['pooling']}", "the untrained model", "no training",
                                        *[_cell(row["tasks"].get(t)) for t in TASK_NAMES], _cell(row["embedding_avg"]),
                                        _cell(base.get("perplexity"), 1, 2), _cell(ppl_news_base, 1, 2),
                                        "–", "–", "–", "–"]) + " |")
    for res in sorted(results, key=lambda r: table_order(r["ablation"]["name"])):
        row, recon = res["rows"][0], res.get("reconstruction") or {"exact": {}, "token_accuracy": {}}
        news = res.get("perplexity_ood")
        delta = f" ({100 * (news / ppl_news_base - 1):+.1f})" if news and ppl_news_base else ""
        train_s, note = res["ablation"].get("train_s"), res["ablation"].get("train_note")
        name = res["ablation"]["name"]
        lines.append("| " + " | ".join([name, QUESTIONS.get(name, ""), _changes(res),
                                        *[_cell(row["tasks"].get(t)) for t in TASK_NAMES], _cell(row["embedding_avg"]),
                                        _cell(res.get("perplexity"), 1, 2), _cell(news, 1, 2) + delta,
                                        _cell(recon["exact"].get("8"), 100, 0), _cell(recon["token_accuracy"].get("16"), 100, 0),
                                        _cell((res.get("suffix_attention") or {}).get("special"), 100, 1),
                                        ("–" if train_s is None else f"{train_s / 60:.1f}") + ("*" if note else "")]) + " |")
    notes = [f"{r['ablation']['name']}: {r['ablation']['train_note']}" for r in results if r["ablation"].get("train_note")]
    return "\n".join(lines) + "\n" + ("".join(f"\n\\* {n}" for n in notes) + "\n" if notes else "")


def write_ablation_report(results: list[dict], base: dict, out: Path = PROJECT_ROOT / "results" / "ablations") -> Path:
    """`out`.md (the table, with how it was made) and `out`.html (the figure)."""
    steps = sorted({r["ablation"]["steps"] for r in results})
    text = ("# Ablations\n\nEvery row trains the same reduced budget "
            f"({', '.join(map(str, steps))} steps; `research/ablations/configs/reference.yaml`) and changes one thing "
            "(the `changes` column), then runs the same evaluation: the quick suite's embedding tasks with "
            "texts cut to 64 tokens (so the base rows here differ from results/report.md's, made at 192), "
            "perplexity on held-out Wikipedia (the training domain, 100 rows) and on BBC News (out of "
            "domain, 100 articles cut to 128 tokens), reconstruction from S of held-out Wikipedia text cut "
            "to 8 and 16 tokens (16 texts each), and the share of the suffix's attention that lands on S "
            "(12 held-out texts split in the middle). Training wall time on a 2-core CPU. "
            "Rerun: `make ablations` (finished rows are reused; delete `results/ablations/NAME.json` to redo one).\n\n"
            "Reading it: the `seed-1` row is the reference trained again with another seed, so a difference "
            "smaller than theirs is noise. Rows with `sink_token` also read the sink in front of the "
            "perplexity texts (it is part of their input format), so part of their perplexity change is "
            "that token's, not training's.\n\n"
            + ablation_table(results, base))
    with atomic_file(out.with_suffix(".md"), "w") as f:
        f.write(text)
    with atomic_file(out.with_suffix(".html"), "w") as f:
        f.write(ablation_figure(results, base).to_html(include_plotlyjs=True, full_html=True))
    return out.with_suffix(".md")


def run_ablations(only: list[str] | None = None, report_only: bool = False) -> Path:
    """Run (or reuse) every ablation and the base row, then write the report from every finished
    row; returns the .md path. report_only: train and evaluate nothing, only rewrite the report."""
    if report_only and not (RESULTS / "base.json").is_file():
        raise FileNotFoundError(f"no {RESULTS / 'base.json'} yet: run the ablations first (make ablations)")
    base = json.loads((RESULTS / "base.json").read_text()) if report_only else base_result()
    for name, path in ({} if report_only else ablation_configs(only)).items():
        log.info("ablation %s (%s)", name, path.name)
        run_ablation(name, path)
    done = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))
            if p.stem != "base" and not p.name.endswith(".partial.json")]
    done = sorted(done, key=lambda r: table_order(r["ablation"]["name"]))
    return write_ablation_report(done, base, RESULTS.parent / "ablations")
