"""How reconstruction grows with training: runs on reconstruction rows only, every checkpoint
evaluated on held-out text.

    python -m research.reconstruction.budget [--config research/reconstruction/configs/NAME.yaml ...]
    make reconstruction-curve

Each run (`CURVES`, in `research/reconstruction/configs/`: the first curve at LoRA 5e-4; the long one with the
sink token, 1e-3 and 200 steps; the same with k = 5; that one again in bf16, and with a LoRA of rank 64) trains GEM's reconstruction rows
(`text | S | text`) and nothing else, on texts short enough that the 8- and 16-token tests are
inside what it trains on, saving a checkpoint every few steps (an interrupted run resumes). Each
checkpoint gets the reconstruction test of the quick suite (`lab.evaluation.language`: exact match
and token accuracy at 8 and 16 held-out tokens) and the share of the suffix's attention on S.
Points are saved one by one (atomically) to `research/reconstruction/results/<config name>.json` (dashes as underscores),
so a stopped evaluation resumes too; then `.md` (the table) and `.html` (the curve) beside it, and
`research/reconstruction/results/reconstruction_curves.md`, one line per run.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from lab.storage import PROJECT_ROOT, atomic_file, read_jsonl, write_json_atomic
from lab.training.config_files import config_from_args
from research.ablations import trained_checkpoint

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
EXPERIMENTS = HERE / "configs"
CURVES = ("reconstruction-budget", "reconstruction-budget-long", "reconstruction-budget-k5",
          "reconstruction-budget-k5-bf16", "reconstruction-budget-k5-r64")
CONFIG = EXPERIMENTS / f"{CURVES[0]}.yaml"
RESULTS = HERE / "results"


def out_for(config: Path) -> Path:
    """research/reconstruction/results/<config name, dashes as underscores> (no suffix): where a curve's files go."""
    return RESULTS / Path(config).stem.replace("-", "_")


OUT = out_for(CONFIG)
SUMMARY = RESULTS / "reconstruction_curves.md"
LENGTHS = (8, 16)
PER_LENGTH = 16


def checkpoints_by_step(output_dir: Path) -> list[tuple[int, Path]]:
    """[(step, folder)] of a run's `checkpoint-N` folders, by step."""
    found = [(int(p.name.split("-")[1]), p) for p in Path(output_dir).glob("checkpoint-*")
             if p.is_dir() and p.name.split("-")[1].isdigit()]
    return sorted(found)


def curve_point(checkpoint: Path, heldout: str, lengths=LENGTHS, per_length: int = PER_LENGTH) -> dict:
    """{"reconstruction": {...}, "suffix_attention": {...}} of one checkpoint on held-out text."""
    from lab.evaluation.language import reconstruction_by_length, suffix_attention
    from lab.weights.loading import load

    gem = load(str(checkpoint))
    return {"reconstruction": reconstruction_by_length(gem, heldout, lengths, per_length),
            "suffix_attention": suffix_attention(gem, heldout)}


def final_suite(checkpoint: Path | str) -> dict:
    """What reconstruction-only training did to the rest of the model: the ablations' suite
    (`research.ablations.SUITE`: quick embedding tasks at 64 tokens with the GEM readout, both
    perplexities) on one checkpoint -> {"embedding_avg", "perplexity", "perplexity_ood"}."""
    from lab.evaluation.suite import run_suite
    from research.ablations import SUITE

    result = run_suite(str(checkpoint), suite=SUITE, skip=("mmlu", "reconstruction"), label=Path(checkpoint).name)
    return {"embedding_avg": result["rows"][0]["embedding_avg"], "perplexity": result.get("perplexity"),
            "perplexity_ood": result.get("perplexity_ood")}


def _train_loss_at(metrics: list[dict], step: int) -> float | None:
    """The last logged NTP loss at or before `step` (metrics.jsonl rows)."""
    seen = [m["ntp"] for m in metrics if m.get("step", 0) <= step and m.get("ntp") is not None]
    return seen[-1] if seen else None


def reconstruction_curve(config: Path = CONFIG, out: Path = OUT, lengths=LENGTHS, per_length: int = PER_LENGTH,
                         evaluate=curve_point, final=final_suite) -> dict:
    """Train (or resume, or reuse) the run of `config`, evaluate every checkpoint not yet in
    `out`.json and the last one with `final` (embedding and perplexity), write the table and figure;
    returns the results dict."""
    cfg = config_from_args(str(config), [])
    _, train_s = trained_checkpoint(cfg)
    run_dir = PROJECT_ROOT / cfg.run.output_dir
    target = out.with_suffix(".json")
    path = Path(config).resolve()
    settings = {"config": str(path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path),
                "lengths": list(lengths), "per_length": per_length, "heldout": cfg.rows.heldout}
    result = json.loads(target.read_text()) if target.is_file() else {}
    if result.get("settings") != settings:  # another run or test: start over rather than mix them
        result = {"settings": settings, "points": {}}
    result["train_s"], result["steps"], result["rows_per_step"] = train_s, cfg.optim.steps, cfg.optim.batch_size * cfg.optim.grad_accum
    metrics_file = run_dir / "metrics.jsonl"
    metrics = read_jsonl(metrics_file) if metrics_file.is_file() else []
    for step, ckpt in checkpoints_by_step(run_dir):
        if str(step) in result["points"]:
            continue
        log.info("reconstruction curve: evaluating %s", ckpt.name)
        point = json.loads(json.dumps(evaluate(ckpt, str(PROJECT_ROOT / cfg.rows.heldout), lengths, per_length)))  # str keys, as reloaded
        point["train_ntp_loss"] = _train_loss_at(metrics, step)
        result["points"][str(step)] = point
        write_json_atomic(target, result)  # after every point: an interrupt loses at most one
    checkpoints = checkpoints_by_step(run_dir)
    if checkpoints and (result.get("final") or {}).get("step") != checkpoints[-1][0]:
        step, ckpt = checkpoints[-1]
        log.info("reconstruction curve: embedding and perplexity of %s", ckpt.name)
        result["final"] = {"step": step, **final(ckpt)}
    write_json_atomic(target, result)
    write_curve_report(result, out)
    return result


def curve_table(result: dict) -> str:
    """Markdown: one row per checkpoint."""
    lengths = result["settings"]["lengths"]
    head = ["step", "rows seen", "train NTP loss",
            *[f"{kind} @{n}" for n in lengths for kind in ("exact", "token acc.")], "suffix→S attn"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for step in sorted(result["points"], key=int):
        p = result["points"][step]
        rec = p["reconstruction"]
        loss = p.get("train_ntp_loss")
        cells = [step, str(int(step) * result["rows_per_step"]), "–" if loss is None else f"{loss:.2f}"]
        for n in lengths:
            cells += [f"{100 * rec['exact'].get(str(n), 0):.0f}", f"{100 * rec['token_accuracy'].get(str(n), 0):.1f}"]
        share = (p.get("suffix_attention") or {}).get("special")
        cells.append("–" if share is None else f"{100 * share:.1f}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def config_path(recorded: str) -> Path:
    """A run config's path as a result file records it (relative to the project, or absolute)."""
    path = Path(recorded)
    return path if path.is_absolute() else PROJECT_ROOT / path


def run_rows(cfg) -> str:
    """What a run trains on, in words (the curve report's first line)."""
    if cfg is None:
        return "GEM's reconstruction rows"
    if cfg.rows.p_plain == 0 and cfg.rows.reconstruction_share == 1 and cfg.objective.ntp_steps == cfg.optim.steps and not cfg.run.init_from:
        return "GEM's reconstruction rows only (`text | S | text`)"
    rows = (f"{100 * cfg.rows.p_plain:.0f} % plain rows, the rest {100 * cfg.rows.reconstruction_share:.0f} % reconstruction "
            f"(`text | S | text`) and {100 * (1 - cfg.rows.reconstruction_share):.0f} % continuation rows")
    if cfg.rows.reconstruction_min_tokens:
        rows += f", reconstruction texts cut to a random length from {cfg.rows.reconstruction_min_tokens} tokens"
    if cfg.optim.steps > cfg.objective.ntp_steps:
        rows += f"; contrastive weight {cfg.objective.alpha_cl:g} after step {cfg.objective.ntp_steps}"
        if cfg.extensions.distill_weight or cfg.extensions.distill_embedding_weight:
            rows += f", with distillation from {cfg.extensions.teacher}"
    return (f"starting from `{cfg.run.init_from}`, " if cfg.run.init_from else "") + rows


def write_curve_report(result: dict, out: Path = OUT) -> Path:
    """`out`.md (table and how it was made) and `out`.html (token accuracy and exact match by step)."""
    from lab.viz.figures import lines_figure

    s = result["settings"]
    train = result.get("train_s")
    config = config_path(s["config"])
    cfg = config_from_args(str(config), []) if config.is_file() else None
    text = ("# Reconstruction vs training budget\n\n"
            f"One run of `{s['config']}`: {run_rows(cfg)}, "
            f"{result['steps']} steps of {result['rows_per_step']} rows"
            + (f", {train / 60:.1f} min of training on this machine" if train else "")
            + ". Each checkpoint reconstructs held-out Wikipedia text from S alone "
            f"({', '.join(map(str, s['lengths']))} tokens, {s['per_length']} texts each; greedy; exact = the whole "
            "text back, token acc. = share of positions right) and reports the share of the suffix's attention "
            f"on S (mean over layers and heads). Rerun: `python -m research.reconstruction.budget --config "
            f"{s['config']}` (finished points are reused).\n\n"
            + curve_table(result))
    with atomic_file(out.with_suffix(".md"), "w") as f:
        f.write(text)
    steps = sorted(result["points"], key=int)
    series = {}
    for n in s["lengths"]:
        for kind, key in (("token acc.", "token_accuracy"), ("exact", "exact")):
            series[f"{kind} @{n}"] = [100 * result["points"][st]["reconstruction"][key].get(str(n), 0) for st in steps]
    fig = lines_figure([int(st) for st in steps], series, "Reconstruction from S vs training steps",
                       "training step", "% on held-out text")
    with atomic_file(out.with_suffix(".html"), "w") as f:
        f.write(fig.to_html(include_plotlyjs=True, full_html=True))
    return out.with_suffix(".md")


def summary_table(results: dict[str, dict]) -> str:
    """Markdown, one line per run ({run name: result}): its settings and training time, its best
    checkpoint by token accuracy at the shortest length (with that checkpoint's other numbers), and
    the last checkpoint's token accuracy at that length (16 texts per length: a peak can be noise)."""
    if not results:
        return ""
    lengths = [str(n) for n in next(iter(results.values()))["settings"]["lengths"]]
    n0 = lengths[0]
    head = ["run", "k", "LoRA r", "LoRA lr", "steps × rows", "train min", "best step",
            *[f"{kind} @{n}" for n in lengths for kind in ("exact", "token acc.")], "suffix→S attn",
            f"last step: token acc. @{n0}", "last step: emb. avg", "last step: ppl Wiki / news"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, result in results.items():
        points = result["points"]
        if not points:
            continue
        cfg = config_from_args(str(config_path(result["settings"]["config"])), [])
        accuracy = {s: p["reconstruction"]["token_accuracy"].get(n0, 0) for s, p in points.items()}
        best = max(points, key=lambda s: (accuracy[s], -int(s)))
        last = max(points, key=int)
        rec, attn = points[best]["reconstruction"], (points[best].get("suffix_attention") or {}).get("special")
        cells = [name, cfg.gem.k, cfg.lora.r, f"{cfg.optim.lr_ntp:g}", f"{result['steps']} × {result['rows_per_step']}",
                 f"{result['train_s'] / 60:.1f}" if result.get("train_s") else "–", best]
        for n in lengths:
            cells += [f"{100 * rec['exact'].get(n, 0):.0f}", f"{100 * rec['token_accuracy'].get(n, 0):.1f}"]
        cells += ["–" if attn is None else f"{100 * attn:.1f}", f"{100 * accuracy[last]:.1f} (step {last})"]
        final = result.get("final") or {}
        cells += [f"{100 * final['embedding_avg']:.1f}" if final.get("embedding_avg") is not None else "–",
                  " / ".join(f"{final[k]:.2f}" if final.get(k) else "–" for k in ("perplexity", "perplexity_ood"))]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def _base_line() -> str:
    """', where the untrained base model reads ...' from the ablations' base row, if measured."""
    from research.ablations import RESULTS as ABLATIONS

    path = ABLATIONS / "base.json"
    if not path.is_file():
        return ""
    base = json.loads(path.read_text())
    scores = ", ".join(f"{r['pooling']} pooling {100 * r['embedding_avg']:.1f}" for r in base["rows"])
    return (f", where the untrained base model reads {scores} and perplexity {base['perplexity']:.2f} / "
            f"{base['perplexity_ood']:.2f} (without the sink token these runs put in front)")


def write_summary(curves=CURVES, path: Path = SUMMARY) -> Path:
    """`path`: the summary table of every run in `curves` that has results so far."""
    results = {}
    for name in curves:
        target = out_for(EXPERIMENTS / f"{name}.yaml").with_suffix(".json")
        if target.is_file():
            results[name] = json.loads(target.read_text())
    with atomic_file(path, "w") as f:
        f.write("# Reconstruction curves\n\nOne line per run of `make reconstruction-curve` (configs in "
                "`research/reconstruction/configs/`; every checkpoint of a run in `research/reconstruction/results/<run>.md`, dashes as "
                "underscores): the checkpoint with the best token accuracy at 8 held-out tokens. All rows "
                "`text | S | text` only, texts cut at 17 tokens, 16 held-out texts per length. The last "
                "checkpoint also gets the ablations' suite (`results/ablations.md`: quick embedding tasks at 64 "
                "tokens, perplexity on 100 held-out Wikipedia rows and on BBC News)"
                + _base_line() + ".\n\n" + summary_table(results))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", nargs="+", default=[str(EXPERIMENTS / f"{c}.yaml") for c in CURVES],
                   help="one or more run configs (default: every curve in CURVES)")
    p.add_argument("--out", default=None, help="results path without suffix (.json, .md, .html); "
                   "default research/reconstruction/results/<config name>; only with a single --config")
    args = p.parse_args(argv)
    if args.out and len(args.config) > 1:
        p.error("--out names one run's files: give a single --config with it")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for config in map(Path, args.config):
        print(curve_table(reconstruction_curve(config, Path(args.out) if args.out else out_for(config))))
    print(write_summary().read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
