"""GEM training on accelerate: CPU or one/many GPUs, LoRA or full fine-tune, exact resume.

    python -m lab train --config configs/gem-smollm2-135m.yaml [--steps=200 --batch_size=16 ...]
    accelerate launch --config_file configs/accelerate/ddp.yaml -m lab train --config ...   # GPUs
    torchrun --standalone --nproc_per_node 2 -m lab train --config ...   # CPU processes (gloo)

Data order is a pure function of (seed, step, process) (`data_order`), so `--resume` continues
with exactly the batches the uninterrupted run would have seen, and N steps straight equal
N/2 + resume + N/2.

Checkpoints (`output_dir/checkpoint-STEP/`, and `output_dir/last` -> the newest) are written
atomically every `save_every` steps and on Ctrl-C / SIGTERM; each holds the GEM checkpoint
(`lab.load(path)` works on it), the config, the optimizer and logit-scale state (safetensors +
JSON) and the metrics so far. Metrics go to `output_dir/metrics.jsonl`, one line per logged step.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..gem import GemModel
from ..gem.masks import Role
from ..storage import read_json, read_jsonl, remove_stale_temporaries
from .collate import GemCollator
from .config import TrainConfig
from .config_files import flat_items, load_saved_config
from .data_order import article_partners, example_indices, training_example
from .head_init import RidgeHeadFit
from .losses import LogitScale, alpha_at, lr_at
from .objective import GemObjective
from .setup import extension_terms, init_checkpoint, load_weights_into, prepare_model
from .state import (STATE_DIR, append_metrics, clear_previous_run, latest_checkpoint, load_training_state, previous_run,
                    record_resume, rewrite_metrics, save_run_checkpoint)

log = logging.getLogger(__name__)


class StopRequested(Exception):
    pass


@dataclass
class Run:
    """Everything one training run holds while it steps."""

    cfg: TrainConfig
    accelerator: object
    gem: GemModel
    objective: torch.nn.Module
    optimizer: torch.optim.Optimizer
    logit_scale: LogitScale
    collator: GemCollator
    corpus: list[str]
    partners: list | None
    params: list
    teacher: object = None  # callable(texts) -> (n, t) embeddings, when a term or the head fit needs one
    callbacks: list = field(default_factory=list)  # each has on_step_start(run): phase changes of the recipe
    step: int = 0
    metrics: list[dict] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.cfg.run.output_dir)


def _accelerator():
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # find_unused_parameters: the logit scale gets no gradient in the NTP phase (alpha = 0)
    return Accelerator(gradient_accumulation_steps=1, cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def _resume_into(run: Run) -> None:
    ckpt = latest_checkpoint(run.out)
    if ckpt is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint in {run.out}")
    saved = flat_items(load_saved_config(read_json(ckpt / "train_config.json"), str(ckpt)))
    changed = sorted(k for k, v in flat_items(run.cfg).items() if v != saved.get(k))
    if changed:
        log.warning("resuming with settings that differ from the checkpoint's: %s", ", ".join(changed))
    load_weights_into(run.gem, ckpt)
    run.step, run.metrics = load_training_state(ckpt / STATE_DIR, run.optimizer, run.logit_scale)
    if run.accelerator.is_main_process:
        rewrite_metrics(run.out, run.metrics)  # rows logged after the checkpoint are logged again
        record_resume(run.out, run.step, ckpt.name)  # the run's folder says where it was resumed
    log.info("resumed from %s at step %d", ckpt, run.step)


def start_run(cfg: TrainConfig, resume: bool = False, force: bool = False) -> Run:
    """Model, objective, optimizer, data and (with resume) the state of the newest checkpoint. A new
    run into a folder that holds another run is refused unless `force` (which removes the old
    run's checkpoints and log first)."""
    left = [] if resume else previous_run(Path(cfg.run.output_dir))
    if left and not force:
        raise FileExistsError(f"{cfg.run.output_dir} already holds a run ({', '.join(left[:4])}): continue it with "
                              f"--resume, choose another --run.output_dir, or pass --force to start over there")
    accelerator = _accelerator()
    if accelerator.is_main_process:
        remove_stale_temporaries(cfg.run.output_dir)  # half-written checkpoints of a killed run
    if left and accelerator.is_main_process:
        clear_previous_run(Path(cfg.run.output_dir))
    rows = read_jsonl(cfg.rows.corpus)
    if len(rows) < cfg.optim.batch_size:
        raise ValueError(f"{cfg.rows.corpus} has {len(rows)} rows, fewer than batch_size={cfg.optim.batch_size}")
    torch.manual_seed(cfg.run.seed)
    gem = prepare_model(cfg, accelerator.device)
    logit_scale = LogitScale(cfg.objective.logit_scale_init, cfg.objective.logit_scale_max).to(accelerator.device)
    teacher, terms = extension_terms(cfg, accelerator.device)
    objective = GemObjective(gem.model, logit_scale, gem.suffix_sees_bos, readout_head=gem.readout_head, terms=terms,
                             trainable_head_rows=gem.special_ids if cfg.lora.r > 0 or not cfg.lora.train_backbone else None)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(objective, cfg), lr=1.0, weight_decay=cfg.optim.weight_decay)
    callbacks = [RidgeHeadFit(cfg)] if cfg.extensions.head_init == "ridge" else []
    run = Run(cfg, accelerator, gem, objective, optimizer, logit_scale,
              GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg), [r["text"] for r in rows],
              article_partners(rows, cfg.run.seed) if cfg.extensions.positive == "article" else None, params,
              teacher=teacher, callbacks=callbacks)
    if resume:
        _resume_into(run)
    elif cfg.run.init_from:
        load_weights_into(run.gem, init_checkpoint(cfg))
        log.info("starting from the weights of %s", cfg.run.init_from)
        if cfg.extensions.head_init == "ridge":
            log.warning("run.init_from with extensions.head_init: ridge - the loaded readout head is fitted "
                        "again at step %d; set extensions.head_init: default to keep it", cfg.objective.ntp_steps)
    run.objective, run.optimizer = accelerator.prepare(run.objective, run.optimizer)
    return run


def _param_groups(objective: GemObjective, cfg: TrainConfig) -> list[dict]:
    """The trainable parameters; the readout head's (if any) in a group of its own whose learning
    rate is `cfg.extensions.head_lr_scale` times the schedule's (a fresh projection needs a larger step than
    LoRA's)."""
    head = set(map(id, objective.readout_head.parameters())) if objective.readout_head is not None else set()
    rest = [p for p in objective.parameters() if p.requires_grad and id(p) not in head]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if head:
        groups.append({"params": [p for p in objective.readout_head.parameters() if p.requires_grad],
                       "lr_scale": cfg.extensions.head_lr_scale})
    return groups


def train_step(run: Run) -> tuple[dict, int]:
    """One optimizer step at `run.step`: ({loss, ntp, cl, lr, alpha}, real tokens seen by all processes)."""
    cfg, acc = run.cfg, run.accelerator
    for callback in run.callbacks:
        callback.on_step_start(run)
    alpha, lr = alpha_at(run.step, cfg), lr_at(run.step, cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    parts, tokens = dict.fromkeys(acc.unwrap_model(run.objective).loss_names, 0.0), 0
    for micro in range(cfg.optim.grad_accum):
        idx = example_indices(run.step, micro, cfg, len(run.corpus), acc.process_index, acc.num_processes)
        batch = run.collator([training_example(i, run.corpus, run.partners) for i in idx], contrastive=alpha > 0)
        if batch.get("empty"):
            continue
        batch = batch_to_device(batch, acc.device)
        res = run.objective(batch, alpha)
        acc.backward(res["backward"] / cfg.optim.grad_accum)
        tokens += int((batch["roles"] != Role.PAD).sum()) * acc.num_processes
        for k in parts:
            parts[k] += float(res[k].detach()) / cfg.optim.grad_accum
    if cfg.optim.grad_clip:
        acc.clip_grad_norm_(run.params, cfg.optim.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return {**parts, "lr": lr, "alpha": alpha}, tokens


def _log_row(run: Run, row: dict, evaluate, on_log) -> None:
    cfg, acc = run.cfg, run.accelerator
    if evaluate and cfg.run.eval_every and run.step % cfg.run.eval_every == 0 and acc.is_main_process:
        row.update(_evaluate(evaluate, run.gem))
    if run.step % cfg.run.log_every == 0 or run.step == cfg.optim.steps or "eval" in str(row):
        run.metrics.append(row)
        if acc.is_main_process:
            append_metrics(run.out, row)
            if on_log is not None:
                on_log(list(run.metrics))


def _save(run: Run) -> None:
    save_run_checkpoint(run.accelerator, run.out, run.cfg, run.gem, run.optimizer, run.logit_scale, run.step,
                        run.metrics)


def train(cfg: TrainConfig, resume: bool = False, evaluate=None, stop_after: int | None = None,
          on_log=None, force: bool = False) -> Path:
    """Run (or resume) training; returns the final checkpoint folder.

    evaluate: optional callable(GemModel) -> dict of quick metrics, run every `eval_every` steps.
    on_log: optional callable(list of metric rows so far), called on the main process whenever a
    row is logged (notebooks draw live curves with it).
    stop_after: stop (with a checkpoint) after this many steps of *this call* (for tests).
    force: start over in an output_dir that holds another run (without it, that is refused).
    """
    run = start_run(cfg, resume, force)
    acc, start = run.accelerator, run.step
    log.info("training on %s with %d processes (global batch %d)", acc.device, acc.num_processes,
             cfg.optim.batch_size * cfg.optim.grad_accum * acc.num_processes)
    stop = {"now": False}
    old_handlers = {s: signal.signal(s, lambda *_: stop.update(now=True)) for s in (signal.SIGINT, signal.SIGTERM)} \
        if acc.is_main_process or acc.num_processes == 1 else {}
    bar = tqdm(total=cfg.optim.steps, initial=start, desc="train", disable=not acc.is_main_process)
    t0, tokens = time.perf_counter(), 0
    try:
        while run.step < cfg.optim.steps:
            row, n = train_step(run)
            tokens += n
            row = {"step": run.step, **row, "scale": float(run.logit_scale().detach()),
                   "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9),
                   "elapsed_s": time.perf_counter() - t0}
            _log_row(run, row, evaluate, on_log)
            terms = {k: f"{row[k]:.3f}" for k in acc.unwrap_model(run.objective).loss_names[3:] if row[k]}
            bar.set_postfix(loss=f"{row['loss']:.3f}", ntp=f"{row['ntp']:.3f}", cl=f"{row['cl']:.3f}", **terms,
                            lr=f"{row['lr']:.1e}", a=row["alpha"], tok_s=f"{row['tokens_per_s']:.0f}")
            bar.update(1)
            stop_now = stop["now"] or (stop_after is not None and run.step - start >= stop_after)
            periodic = cfg.run.save_every and run.step % cfg.run.save_every == 0  # 0: only the last step
            if periodic or run.step == cfg.optim.steps or stop_now:
                _save(run)
            if stop_now:
                raise StopRequested()
    except StopRequested:
        log.warning("stopped at step %d; checkpoint saved, continue with --resume", run.step)
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return run.out / f"checkpoint-{run.step}"


def batch_to_device(batch: dict, device) -> dict:
    """A collated batch on `device`: tensors and dicts of tensors (the views) move, the rest stays."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device)
        elif isinstance(v, dict):
            out[k] = {kk: vv.to(device) if torch.is_tensor(vv) else vv for kk, vv in v.items()}
        else:
            out[k] = v
    return out


def _evaluate(evaluate, gem: GemModel) -> dict:
    """`evaluate` on a view of the model being trained, as a trained GEM model in eval mode."""
    view = GemModel(gem.model, gem.tokenizer, dataclasses.replace(gem.gem_config, trained=True), name=gem.name)
    gem.model.eval()
    try:
        with torch.no_grad():
            return {f"eval_{k}": v for k, v in evaluate(view).items()}
    finally:
        gem.model.train()
