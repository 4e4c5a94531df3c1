"""GEM losses and schedules (gem-method.md §4): next-token prediction, InfoNCE, alpha and LR."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig

IGNORE = -100


def ntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy. logits (B, T, V), labels (B, T) aligned with the inputs
    (position t's logits predict labels[t + 1]); IGNORE labels do not count."""
    total, count = ntp_loss_sum(logits, labels)
    return total / count.clamp(min=1)


def ntp_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token cross-entropy, number of target tokens): for means over all processes."""
    targets = labels[:, 1:].flatten()
    total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets, ignore_index=IGNORE, reduction="sum")
    return total, (targets != IGNORE).sum()


class LogitScale(nn.Module):
    """tau = exp(lambda), lambda learnable, initialised ln(init), clamped to [0, ln(max)] (CLIP-style)."""

    def __init__(self, init: float = 20.0, max_scale: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, self.max_log).exp()


def info_nce(q: torch.Tensor, d: torch.Tensor, scale: torch.Tensor, offset: int = 0,
             groups_q: torch.Tensor | None = None, groups_d: torch.Tensor | None = None) -> torch.Tensor:
    """-mean_i log softmax_j(scale * cos(q_i, d_j))[offset + i]: in-batch negatives.

    q: (B, dim) this process's queries; d: (N, dim) the positives of all processes (N >= B), the
    positive of q_i being d[offset + i]. Single process: N = B, offset = 0.
    groups_q (B,), groups_d (N,): optional source ids (e.g. article); d_j of q_i's group other than
    its own positive is not a negative (it is left out of the softmax).
    """
    sim = scale * (F.normalize(q.float(), dim=-1) @ F.normalize(d.float(), dim=-1).T)
    target = offset + torch.arange(q.shape[0], device=q.device)
    if groups_q is not None:
        same = groups_q[:, None] == groups_d[None, :]
        same[torch.arange(q.shape[0]), target] = False
        sim = sim.masked_fill(same, float("-inf"))
    return F.cross_entropy(sim, target)


def alpha_at(step: int, cfg: TrainConfig) -> float:
    """Weight of the contrastive loss at `step` (0-based): 0 during the NTP phase, then alpha_cl."""
    return 0.0 if step < cfg.ntp_steps else cfg.alpha_cl


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at `step`: warmup + cosine in the NTP phase, then cosine from lr_cl."""
    def cosine(t: int, length: int, peak: float) -> float:
        frac = min(max(t / max(length, 1), 0.0), 1.0)
        floor = peak * cfg.min_lr_ratio
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    if step < cfg.ntp_steps:
        if step < cfg.warmup_steps:
            return cfg.lr_ntp * (step + 1) / cfg.warmup_steps
        return cosine(step - cfg.warmup_steps, cfg.ntp_steps - cfg.warmup_steps, cfg.lr_ntp)
    return cosine(step - cfg.ntp_steps, cfg.steps - cfg.ntp_steps, cfg.lr_cl)
