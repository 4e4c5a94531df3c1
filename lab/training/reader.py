"""Training the reconstruction reader (`lab.gem.reader`) on a finished GEM model, everything else frozen.

One step, for a batch of B texts of n_b tokens (n_b drawn from [min_tokens, max_tokens]):

    1. prefill `sink text | S_1..S_k` under the GEM mask, reader off, no gradient; keep each row's
       sink + k S entries of every layer's cache: (B, heads, 1 + k, head_dim), as `reconstruct` does
    2. reader on: feed `t_1 .. t_n` after that cache (positions continue the row's), and score
       the next tokens `t_2 .. t_n eos` (cross-entropy, padding ignored). t_1 is the last S's
       prediction in the prefill (reader off), as in `GemModel.reconstruct`: a fresh reader
       (B = 0) decodes exactly like the GEM model, and training starts from its skill

Only the reader's LoRA pairs get gradients, so the GEM model's embeddings, generation and every
number measured on it stay exactly as they were.

    python -m lab train-reader ...   (lab.experiments.reader: the run, its curve, the CLI)
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ..gem.forward import gem_inputs, unwrap
from ..gem.kv_cache import full_prefill_cache, s_cache_positions
from ..gem.lm_loss import IGNORE_INDEX as IGNORE
from ..gem.pooling import collate_plans, plan_row
from ..gem.reader import Reader, ReaderConfig
from ..storage import read_jsonl
from ..storage.atomic import atomic_file, write_json_atomic

log = logging.getLogger(__name__)
OPTIM_FILE = "reader_optim.pt"


@dataclass
class ReaderTrainConfig:
    corpus: str = "data/build/wiki/train.jsonl"
    r: int = 8
    alpha: int = 16
    lr: float = 1e-3
    batch_size: int = 32
    steps: int = 400
    minutes: float = 0.0  # > 0: stop after this much training time (whichever comes first)
    min_tokens: int = 4
    max_tokens: int = 32
    warmup_steps: int = 10
    seed: int = 0
    save_every: int = 25


def text_batch(gem, rows: list[dict], rng: random.Random, cfg: ReaderTrainConfig) -> list[list[int]]:
    """B token sequences of one length n (uniform in [min_tokens, max_tokens], drawn per batch so
    that nothing is padded): the first n tokens of random corpus rows at least that long."""
    n = rng.randint(cfg.min_tokens, cfg.max_tokens)
    out = []
    for _ in range(100 * cfg.batch_size):
        ids = gem.text_ids(rows[rng.randrange(len(rows))]["text"])
        if len(ids) >= n:
            out.append(ids[:n])
            if len(out) == cfg.batch_size:
                return out
    raise ValueError(f"{cfg.corpus}: too few rows of >= {n} tokens; lower max_tokens")


@torch.no_grad()
def special_caches(gem, seqs: list[list[int]]) -> tuple[DynamicCache, torch.Tensor]:
    """The batched S cache: (cache of B rows x (sink + k) entries per layer, (B,) next positions).
    Entry for entry what `GemModel.special_cache` keeps for each text on its own."""
    plans = [plan_row("gem", ids, gem.bos, gem.special_ids, gem.pieces) for ids in seqs]
    batch = collate_plans(plans, gem.pad_token_id)
    full = full_prefill_cache(gem.model)
    inputs = gem_inputs(gem.model, batch["input_ids"].to(gem.device), batch["roles"].to(gem.device),
                        suffix_sees_bos=gem.suffix_sees_bos)
    unwrap(gem.model).model(**inputs, use_cache=True, cache=full)
    keep = s_cache_positions(batch["roles"], batch["pool"], gem.suffix_sees_bos)
    n_keep = int(keep[0].sum())
    index = keep.nonzero()[:, 1].view(len(seqs), n_keep).to(gem.device)  # (B, n_keep), in order
    out = DynamicCache(config=unwrap(gem.model).config)
    for i, layer in enumerate(full.layers):
        idx = index[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
        out.update(layer.keys.gather(2, idx), layer.values.gather(2, idx), i)
    next_pos = torch.tensor([len(p.row.input_ids) for p in plans], device=gem.device)
    return out, next_pos


def reader_loss(gem, reader: Reader, seqs: list[list[int]]) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy of `t_1..t_n -> t_2..t_n eos` read from the S cache with the
    reader on; returns (loss, number of scored tokens). t_1 itself is the last S's prediction,
    made in the prefill with the reader off (as `reconstruct` decodes), so it is not scored here."""
    cache, next_pos = special_caches(gem, seqs)
    eos = gem.tokenizer.eos_token_id
    B, T = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((B, T), gem.pad_token_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    valid = torch.zeros(B, T, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        labels[b, :len(s)] = torch.tensor(s[1:] + [eos])
        valid[b, :len(s)] = 1
    dev = gem.device
    n_cached = cache.get_seq_length()
    mask = torch.cat([torch.ones(B, n_cached, dtype=torch.long), valid], dim=1).to(dev)
    pos = next_pos[:, None] + torch.arange(T, device=dev)[None]
    with reader.enabled():
        logits = unwrap(gem.model)(input_ids=ids.to(dev), position_ids=pos, attention_mask=mask,
                                   cache=cache, use_cache=True).logits
    labels = labels.to(dev)
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    return loss, int((labels != IGNORE).sum())


def new_reader(gem, cfg: ReaderTrainConfig) -> Reader:
    """A fresh fp32 reader on `gem` (B = 0: decoding unchanged until it trains)."""
    return Reader(unwrap(gem.model), ReaderConfig(r=cfg.r, alpha=cfg.alpha),
                  dtype=torch.float32)


def train_reader(gem, cfg: ReaderTrainConfig, out: str | Path, evaluate=None,
                 stop_after: int | None = None) -> Reader:
    """Train a reader on `gem` (frozen) and save it into `out` every `save_every` steps (atomic; a
    rerun with the same `out` resumes exactly from the last save). `evaluate(reader, step)` runs
    after each save; `stop_after` ends the run early at that step (saved), as an interrupt would.
    `reader_state.json` records the step, wall time and the part of it spent evaluating.
    Returns the trained reader, attached to `gem.model`."""
    from tqdm.auto import tqdm

    out = Path(out)
    gem.model.requires_grad_(False)
    gem.model.eval()  # no dropout anywhere: the frozen model as it embeds and decodes
    state_file = out / "reader_state.json"
    reader = new_reader(gem, cfg)
    opt = torch.optim.AdamW(reader.parameters(), lr=cfg.lr, weight_decay=0.0)
    step, spent, eval_s = 0, 0.0, 0.0
    if (out / OPTIM_FILE).is_file():  # fp32 weights, AdamW moments and the step: an exact resume
        saved = torch.load(out / OPTIM_FILE, weights_only=True)
        reader.load_state_dict(saved["reader"])
        opt.load_state_dict(saved["optimizer"])
        if "step" not in saved:  # written before the step went into this file: the state file has it
            saved.update(step=json.loads(state_file.read_text())["step"], wall_s=0.0, eval_s=0.0)
        step, spent, eval_s = int(saved["step"]), float(saved["wall_s"]), float(saved["eval_s"])
        log.info("resuming the reader at step %d from %s", step, out)
    rows = read_jsonl(cfg.corpus)
    t0 = time.time() - spent
    bar = tqdm(total=cfg.steps, initial=step, desc="reader")
    end = min(cfg.steps, stop_after or cfg.steps)
    while step < end and not (cfg.minutes and spent / 60 >= cfg.minutes):
        rng = random.Random(cfg.seed * 1_000_003 + step)  # data order: a function of (seed, step)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        loss, n = reader_loss(gem, reader, text_batch(gem, rows, rng, cfg))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        spent = time.time() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.save_every == 0 or step == end or (cfg.minutes and spent / 60 >= cfg.minutes):
            reader.save(out)  # fp16, for checkpoints; the resume point is OPTIM_FILE, written next
            with atomic_file(out / OPTIM_FILE, "wb") as f:
                torch.save({"reader": reader.state_dict(), "optimizer": opt.state_dict(), "step": step,
                            "wall_s": spent, "eval_s": eval_s}, f)
            write_json_atomic(state_file, {"step": step, "wall_s": spent, "eval_s": eval_s, "loss": loss.item(),
                                           "config": asdict(cfg)})
            log.info("reader step %d loss %.3f (%.1f min)", step, loss.item(), spent / 60)
            if evaluate is not None:
                t = time.time()
                evaluate(reader, step)
                eval_s += time.time() - t
                spent = time.time() - t0
    bar.close()
    return reader
