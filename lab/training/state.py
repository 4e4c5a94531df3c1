"""A run's files: checkpoints with optimizer state (safetensors + JSON), `last`, metrics.jsonl.

    runs/NAME/checkpoint-STEP/   the GEM checkpoint (`lab.load` works on it) + train_config.json
                                 + training_state/ (optimizer.safetensors, state.json)
    runs/NAME/last               the name of the newest checkpoint
    runs/NAME/metrics.jsonl      one JSON line per logged step
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..gem import GemModel
from ..gem.forward import unwrap
from ..weights.checkpoints import save_checkpoint
from ..storage import atomic_file, folder_problem, load_safetensors, read_json, write_json_atomic
from .config import TrainConfig
from .losses import LogitScale

log = logging.getLogger(__name__)

STATE_DIR = "training_state"


def save_training_state(folder: Path, optimizer, logit_scale: LogitScale, step: int, metrics: list[dict]) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {"logit_scale": logit_scale.log_scale.detach().cpu().reshape(1)}, {}
    for pid, st in state["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "optimizer.safetensors"))
    write_json_atomic(folder / "state.json", {"step": step, "param_groups": state["param_groups"],
                                               "scalars": scalars, "metrics": metrics})


def load_training_state(folder: Path, optimizer, logit_scale: LogitScale) -> tuple[int, list[dict]]:
    meta = read_json(folder / "state.json")
    tensors = load_safetensors(folder / "optimizer.safetensors")
    with torch.no_grad():
        logit_scale.log_scale.copy_(tensors.pop("logit_scale")[0])
    state: dict = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["metrics"]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    ckpts = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for p in reversed(ckpts):
        if folder_problem(p) is None:
            return p
    return None


RESUMES = "resumes.json"  # where a run was resumed: [{"step", "checkpoint"}], oldest first


def record_resume(out: Path, step: int, checkpoint: str) -> list[dict]:
    """Add a resume at `step` (from `checkpoint`) to `out`/resumes.json, atomically; returns them all."""
    path = Path(out) / RESUMES
    resumes = read_json(path) if path.is_file() else []
    resumes.append({"step": step, "checkpoint": checkpoint})
    write_json_atomic(path, resumes)
    return resumes


def previous_run(out: Path) -> list[str]:
    """What a finished or stopped run left in `out` (checkpoints, `last`, metrics.jsonl): empty if none."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir()
                  if p.name.startswith("checkpoint-") or p.name in ("last", "metrics.jsonl", RESUMES))


def clear_previous_run(out: Path) -> None:
    """Remove what `previous_run` lists (only that: other files in the folder stay)."""
    import shutil

    for name in previous_run(out):
        path = Path(out) / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def rewrite_metrics(out: Path, rows: list[dict]) -> None:
    """Replace `out/metrics.jsonl` with `rows` (atomically): on resume, the checkpoint's rows, so
    steps logged after it (and logged again now) never appear twice."""
    with atomic_file(Path(out) / "metrics.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def append_metrics(out: Path, row: dict) -> None:
    """Append one logged row to `out/metrics.jsonl`."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def save_run_checkpoint(accelerator, out: Path, cfg: TrainConfig, gem: GemModel, optimizer, logit_scale,
                        step: int, metrics: list[dict]) -> None:
    """Write `out/checkpoint-STEP` (the GEM checkpoint + config + optimizer state) and point
    `out/last` at it, both atomically; only the main process writes."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(gem.model)
    snapshot = GemModel(model, gem.tokenizer, dataclasses.replace(gem.gem_config, trained=True), name=gem.name)
    snapshot.readout_head = gem.readout_head  # the trained head, not a fresh one
    backbone_changed = cfg.lora.train_backbone and cfg.lora.r == 0
    full = {k: v for k, v in unwrap(model).state_dict().items()} if backbone_changed else None
    folder = out / f"checkpoint-{step}"

    def extra(tmp: Path):
        write_json_atomic(tmp / "train_config.json", cfg.to_dict())
        save_training_state(tmp / STATE_DIR, optimizer, logit_scale, step, metrics)

    save_checkpoint(snapshot, folder, full_weights=full, metadata={"step": step}, extra=extra)
    with atomic_file(out / "last", "w") as f:
        f.write(folder.name + "\n")
    log.info("saved %s", folder)
    removed = rotate_checkpoints(out, cfg.run.keep_last, best_step(metrics, cfg.run.best_metric))
    if removed:
        log.info("removed older checkpoints %s (run.keep_last=%d)", ", ".join(removed), cfg.run.keep_last)


def best_step(metrics: list[dict], name: str) -> int | None:
    """The step of the logged row with the highest `name` (None without such rows)."""
    rows = [r for r in metrics if name and isinstance(r.get(name), (int, float)) and r[name] == r[name]]
    return max(rows, key=lambda r: r[name])["step"] if rows else None


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in Path(out).glob("checkpoint-*")
                  if p.is_dir() and p.name.split("-")[1].isdigit())


def rotate_checkpoints(out: Path, keep_last: int, best: int | None = None) -> list[str]:
    """Delete all but the newest `keep_last` checkpoints of a run, always keeping the newest (the
    final one, which `last` names) and the one at or just before step `best` (the best logged
    metric); keep_last 0 keeps every checkpoint. Returns the names removed."""
    import shutil

    steps = checkpoint_steps(out)
    if keep_last <= 0 or len(steps) <= keep_last:
        return []
    keep = set(steps[-keep_last:])
    if best is not None and any(s <= best for s in steps):
        keep.add(max(s for s in steps if s <= best))
    removed = []
    for s in steps:
        if s not in keep:
            shutil.rmtree(Path(out) / f"checkpoint-{s}", ignore_errors=True)
            removed.append(f"checkpoint-{s}")
    return removed
