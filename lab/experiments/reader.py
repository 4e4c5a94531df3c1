"""The reconstruction reader's run: train it on a shipped GEM model (frozen) and evaluate
reconstruction at every save, so a run is a curve (`lab train-reader`, `make reader`).

    python -m lab train-reader --model gem-smollm2-135m-gpu --out runs/reader --steps 500 --r 6 --alpha 12 \
        [--into runs/gem-smollm2-135m-reader]

The training itself is `lab.training.reader`; the reader, `lab.gem.reader`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from ..storage import read_jsonl
from ..storage.atomic import atomic_file
from ..training.reader import ReaderTrainConfig, train_reader

log = logging.getLogger(__name__)


def reader_curve_evaluator(gem, out: Path, heldout: str, texts: int, lengths=(8, 16)):
    """evaluate(reader, step) for `train_reader`: reconstruction of `texts` held-out texts per length
    with the reader on (reader None: the model alone), one JSON line per save appended to `out`/curve.jsonl (a rerun replaces the
    points of steps it evaluates again)."""
    from ..evaluation.language import reconstruction_by_length

    path = Path(out) / "curve.jsonl"

    def evaluate(reader, step):
        previous, gem.reader = gem.reader, reader
        try:
            t = time.time()
            point = reconstruction_by_length(gem, heldout, lengths, per_length=texts)
            point.update(step=step, eval_s=round(time.time() - t, 1))
        finally:
            gem.reader = previous
        kept = [p for p in read_jsonl(path) if p["step"] != step] if path.is_file() else []
        with atomic_file(path, "w", encoding="utf-8") as f:
            for p in kept + [point]:
                f.write(json.dumps(p) + "\n")
        log.info("reader step %d: exact %s, token accuracy %s", step,
                 {n: round(100 * v) for n, v in point["exact"].items()},
                 {n: round(100 * v, 1) for n, v in point["token_accuracy"].items()})
    return evaluate


def run_reader_training(model: str, out: str | Path, cfg: ReaderTrainConfig, heldout: str,
                        eval_texts: int = 16) -> Path:
    """Load `model` in fp32, train (or resume) its reader into `out`, evaluating at every save."""
    from ..models import load

    gem = load(model, dtype="float32")
    gem.require_gem_tokens("train-reader")
    if gem.reader is not None:
        log.warning("%s already has a reader; training a new one from scratch (the old one stays in the checkpoint)",
                    model)
        gem.reader.detach_hooks()
        gem.reader = None
    torch.manual_seed(cfg.seed)
    evaluate = reader_curve_evaluator(gem, Path(out), heldout, eval_texts) if eval_texts else None
    curve = Path(out) / "curve.jsonl"
    if evaluate is not None and not any(p["step"] == 0 for p in (read_jsonl(curve) if curve.is_file() else [])):
        evaluate(None, 0)  # step 0: no reader, the model alone (= a fresh reader, whose B is 0)
    train_reader(gem, cfg, out, evaluate=evaluate)
    return Path(out)


def curve_table(run: str | Path) -> str:
    """Markdown: one line per evaluated step of a reader run (`curve.jsonl`), exact match and token
    accuracy (%) by length, with the step's training loss where the state file has it."""
    points = sorted(read_jsonl(Path(run) / "curve.jsonl"), key=lambda p: p["step"])
    if not points:
        return ""
    lengths = sorted({int(n) for p in points for n in p["exact"]})
    head = "| step | " + " | ".join(f"exact @{n} | token acc. @{n}" for n in lengths) + " |"
    lines = [head, "|---:|" + "---:|---:|" * len(lengths)]
    for p in points:
        cells = [f"{100 * p['exact'][str(n)]:.0f} | {100 * p['token_accuracy'][str(n)]:.1f}" for n in lengths]
        lines.append(f"| {p['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
