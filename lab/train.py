"""GEM training on accelerate: CPU or one/many GPUs, LoRA or full fine-tune, exact resume.

    python -m lab train --config configs/gem-smollm2-135m.yaml [--steps=200 --batch_size=16 ...]
    accelerate launch --config_file configs/accelerate/ddp.yaml -m lab train --config ...   # GPUs
    torchrun --standalone --nproc_per_node 2 -m lab train --config ...   # CPU processes (gloo)

Data order is a pure function of (seed, step, process): step s of a run with global batch G uses
the examples s*G .. s*G + G - 1 of a seeded permutation of the corpus (reshuffled every epoch),
split across processes and micro-batches. So `--resume` continues with exactly the batches the
uninterrupted run would have seen, and N steps straight equal N/2 + resume + N/2.

Checkpoints (`output_dir/checkpoint-STEP/`, and `output_dir/last` -> the newest) are written
atomically every `save_every` steps and on Ctrl-C / SIGTERM; each holds the GEM checkpoint
(`lab.load(path)` works on it), the config, the optimizer and logit-scale state (safetensors +
JSON) and the metrics so far. Metrics go to `output_dir/metrics.jsonl`, one line per logged step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import signal
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .atomic import atomic_file, folder_problem, write_json_atomic
from .checkpoint import save_checkpoint
from .collate import GemCollator
from .config import TrainConfig
from .corpus import read_jsonl
from .forward import unwrap
from .losses import LogitScale, alpha_at, lr_at
from .model import GemModel, add_new_gem_tokens, cpu_has_fast_bf16, load
from .objective import GemObjective

log = logging.getLogger(__name__)

STATE_DIR = "training_state"


# -- data order ---------------------------------------------------------------------------------
def example_indices(step: int, micro: int, cfg: TrainConfig, n_examples: int, rank: int = 0,
                    world: int = 1) -> list[int]:
    """Corpus indices of micro-batch `micro` of `step` on process `rank` (pure function)."""
    per_step = cfg.batch_size * cfg.grad_accum * world
    out = []
    start = step * per_step + (micro * world + rank) * cfg.batch_size
    for pos in range(start, start + cfg.batch_size):
        epoch, offset = divmod(pos, n_examples)
        perm = _permutation(cfg.seed, epoch, n_examples)
        out.append(perm[offset])
    return out


_PERM_CACHE: dict = {}


def _permutation(seed: int, epoch: int, n: int) -> list[int]:
    key = (seed, epoch, n)
    if key not in _PERM_CACHE:
        perm = list(range(n))
        random.Random(seed * 7919 + epoch).shuffle(perm)
        _PERM_CACHE.clear()
        _PERM_CACHE[key] = perm
    return _PERM_CACHE[key]


# -- model set-up -------------------------------------------------------------------------------
def train_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "fp32":
        return torch.float32
    return torch.bfloat16 if device.type == "cuda" or cpu_has_fast_bf16() else torch.float32


def only_rows_grad_hook(ids: list[int]):
    """Gradient hook keeping only the given rows of an embedding's gradient (new GEM tokens)."""
    def hook(grad):
        mask = torch.zeros(grad.shape[0], 1, dtype=grad.dtype, device=grad.device)
        mask[ids] = 1
        return grad * mask
    return hook


def article_partners(rows: list[dict], seed: int) -> list[tuple[int, int]]:
    """For each row: (index of another row of the same article, article id), drawn with `seed`.
    A row alone in its article is its own partner. Used by `positive: article`."""
    by_title: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_title.setdefault(r.get("title", ""), []).append(i)
    ids = {t: n for n, t in enumerate(by_title)}
    out = []
    for i, r in enumerate(rows):
        same = by_title[r.get("title", "")]
        rng = random.Random(seed * 1_000_003 + i)
        j = same[rng.randrange(len(same))] if len(same) > 1 else i
        while j == i and len(same) > 1:
            j = same[rng.randrange(len(same))]
        out.append((j, ids[r.get("title", "")]))
    return out


def _example(i: int, corpus: list[str], partner) -> dict:
    if partner is None:
        return {"text": corpus[i], "index": i}
    j, group = partner[i]
    return {"text": corpus[i], "index": i, "positive_text": corpus[j], "group": group}


def prepare_model(cfg: TrainConfig, device: torch.device) -> GemModel:
    """The base model with k fresh GEM tokens; LoRA-wrapped if lora_r > 0. The new input rows
    are always trainable (the rest of the embedding matrix stays frozen under LoRA)."""
    gem = add_new_gem_tokens(load(cfg.model, dtype="float32", device="cpu"), cfg.k,
                             max_length=cfg.embed_max_length, suffix_sees_bos=cfg.suffix_sees_bos)
    gem.gem.base_model = cfg.model
    model = gem.model
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        model.requires_grad_(False)
        present = {name.split(".")[-1] for name, _ in model.named_modules()}
        targets = [t for t in cfg.lora_targets if t in present]
        if not targets:
            raise ValueError(f"none of lora_targets {cfg.lora_targets} exist in {cfg.model}; modules: "
                             f"{sorted(present)[:20]}...")
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, target_modules=targets))
        emb = unwrap(model).get_input_embeddings().weight
        emb.requires_grad_(True)
        emb.register_hook(only_rows_grad_hook(gem.special_ids))
    model.to(device=device, dtype=train_dtype(cfg, device))
    trainable = GemModel(model, gem.tokenizer, gem.gem, name=cfg.model)  # (its constructor sets eval mode)
    model.train()
    return trainable


# -- optimizer state as safetensors + JSON ------------------------------------------------------
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
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "optimizer.safetensors"))
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


# -- the loop -------------------------------------------------------------------------------------
class StopRequested(Exception):
    pass


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for p in reversed(ckpts):
        if folder_problem(p) is None:
            return p
    return None


def train(cfg: TrainConfig, resume: bool = False, evaluate=None, stop_after: int | None = None,
          on_log=None) -> Path:
    """Run (or resume) training; returns the final checkpoint folder.

    evaluate: optional callable(GemModel) -> dict of quick metrics, run every `eval_every` steps.
    on_log: optional callable(list of metric rows so far), called on the main process whenever a
    row is logged (notebooks draw live curves with it).
    stop_after: stop (with a checkpoint) after this many steps of *this call* (for tests).
    """
    from accelerate import Accelerator

    from accelerate.utils import DistributedDataParallelKwargs

    # find_unused_parameters: the logit scale gets no gradient in the NTP phase (alpha = 0)
    accelerator = Accelerator(gradient_accumulation_steps=1, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    out = Path(cfg.output_dir)
    rows = read_jsonl(cfg.corpus)
    corpus = [r["text"] for r in rows]
    partner = article_partners(rows, cfg.seed) if cfg.positive == "article" else None
    if len(corpus) < cfg.batch_size:
        raise ValueError(f"{cfg.corpus} has {len(corpus)} rows, fewer than batch_size={cfg.batch_size}")
    torch.manual_seed(cfg.seed)
    gem = prepare_model(cfg, accelerator.device)
    logit_scale = LogitScale(cfg.logit_scale_init, cfg.logit_scale_max).to(accelerator.device)
    objective = GemObjective(gem.model, logit_scale, cfg.suffix_sees_bos)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1.0, weight_decay=cfg.weight_decay)
    start, metrics = 0, []
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {out}")
        saved = json.loads((ckpt / "train_config.json").read_text())
        changed = sorted(k for k, v in dataclasses.asdict(cfg).items() if json.loads(json.dumps(v)) != saved.get(k))
        if changed:
            log.warning("resuming with settings that differ from the checkpoint's: %s", ", ".join(changed))
        _load_weights_into(gem, ckpt)
        start, metrics = load_training_state(ckpt / STATE_DIR, optimizer, logit_scale)
        log.info("resumed from %s at step %d", ckpt, start)
    objective, optimizer = accelerator.prepare(objective, optimizer)
    collator = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    log.info("training on %s with %d processes (global batch %d)", accelerator.device, world,
             cfg.batch_size * cfg.grad_accum * world)

    stop = {"now": False}
    old_handlers = {s: signal.signal(s, lambda *_: stop.update(now=True)) for s in (signal.SIGINT, signal.SIGTERM)} \
        if accelerator.is_main_process or world == 1 else {}
    bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not accelerator.is_main_process)
    step, t0, tokens = start, time.perf_counter(), 0
    try:
        while step < cfg.steps:
            alpha = alpha_at(step, cfg)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            collator.contrastive = alpha > 0
            parts = {"loss": 0.0, "ntp": 0.0, "cl": 0.0}
            for micro in range(cfg.grad_accum):
                idx = example_indices(step, micro, cfg, len(corpus), rank, world)
                batch = collator([_example(i, corpus, partner) for i in idx])
                if batch.get("empty"):
                    continue
                batch = _to_device(batch, accelerator.device)
                res = objective(batch, alpha)
                accelerator.backward(res["backward"] / cfg.grad_accum)
                tokens += int((batch["roles"] != 0).sum()) * world
                for k in parts:
                    parts[k] += float(res[k].detach()) / cfg.grad_accum
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - t0
            row = {"step": step, **parts, "lr": lr, "alpha": alpha, "scale": float(logit_scale().detach()),
                   "tokens_per_s": tokens / max(elapsed, 1e-9)}
            if evaluate and cfg.eval_every and step % cfg.eval_every == 0 and accelerator.is_main_process:
                row.update(_evaluate(evaluate, gem))
            if step % cfg.log_every == 0 or step == cfg.steps or "eval" in str(row):
                metrics.append(row)
                if accelerator.is_main_process:
                    _append_metrics(out, row)
                    if on_log is not None:
                        on_log(list(metrics))
            bar.set_postfix(loss=f"{parts['loss']:.3f}", ntp=f"{parts['ntp']:.3f}", cl=f"{parts['cl']:.3f}",
                            lr=f"{lr:.1e}", a=alpha, tok_s=f"{row['tokens_per_s']:.0f}")
            bar.update(1)
            stop_now = stop["now"] or (stop_after is not None and step - start >= stop_after)
            if step % cfg.save_every == 0 or step == cfg.steps or stop_now:
                _save(accelerator, out, cfg, gem, optimizer, logit_scale, step, metrics)
            if stop_now:
                raise StopRequested()
    except StopRequested:
        log.warning("stopped at step %d; checkpoint saved, continue with --resume", step)
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return out / f"checkpoint-{step}"


def _to_device(batch: dict, device) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device)
        elif isinstance(v, dict):
            out[k] = {kk: vv.to(device) for kk, vv in v.items()}
        else:
            out[k] = v
    return out


def _evaluate(evaluate, gem: GemModel) -> dict:
    gem.model.eval()
    try:
        with torch.no_grad():
            gem.gem.trained = True
            return {f"eval_{k}": v for k, v in evaluate(gem).items()}
    finally:
        gem.gem.trained = False
        gem.model.train()


def _append_metrics(out: Path, row: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _save(accelerator, out: Path, cfg: TrainConfig, gem: GemModel, optimizer, logit_scale, step, metrics):
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(gem.model)
    snapshot = GemModel.__new__(GemModel)
    snapshot.__dict__.update(gem.__dict__)
    snapshot.model = model
    snapshot.gem = dataclasses.replace(gem.gem, trained=True)
    full = None if cfg.lora_r > 0 else {k: v for k, v in unwrap(model).state_dict().items()}
    folder = out / f"checkpoint-{step}"

    def extra(tmp: Path):
        write_json_atomic(tmp / "train_config.json", dataclasses.asdict(cfg))
        save_training_state(tmp / STATE_DIR, optimizer, logit_scale, step, metrics)

    save_checkpoint(snapshot, folder, full_weights=full, metadata={"step": step}, extra=extra)
    with atomic_file(out / "last", "w") as f:
        f.write(folder.name + "\n")
    log.info("saved %s", folder)


def _load_weights_into(gem: GemModel, ckpt: Path) -> None:
    """Load a checkpoint's trained weights (token rows, adapter or full weights) into `gem.model`."""
    from peft import set_peft_model_state_dict

    from .checkpoint import ADAPTER_DIR, WEIGHTS_FILE, load_token_rows

    load_token_rows(gem.model, gem.special_ids, ckpt)
    if (ckpt / ADAPTER_DIR).is_dir():
        set_peft_model_state_dict(gem.model, load_file(str(ckpt / ADAPTER_DIR / "adapter_model.safetensors")))
    if (ckpt / WEIGHTS_FILE).is_file():
        unwrap(gem.model).load_state_dict(load_file(str(ckpt / WEIGHTS_FILE)), strict=False)


def _read_config_file(path: str | Path) -> dict:
    """A YAML config; `base: other.yaml` (relative to this file) is read first and overridden."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (see configs/)")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    base = data.pop("base", None)
    if base:
        candidates = [path.parent / base, path.parent.parent / base]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: base config {base!r} not found next to it or one folder up")
        data = {**_read_config_file(found), **data}
    return data


def config_from_args(path: str | None, overrides: list[str]) -> TrainConfig:
    """A TrainConfig from a YAML file plus `--key=value` overrides (values parsed as YAML)."""
    import yaml

    data = _read_config_file(path) if path else {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ValueError(f"override {item!r} must look like --key=value")
        key, value = item[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; known: {', '.join(sorted(fields))}")
        data[key] = yaml.safe_load(value)
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
    return TrainConfig(**data)
