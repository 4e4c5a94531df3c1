"""GEM losses and schedules (gem-method.md §4): InfoNCE, the logit scale, alpha and LR.

The next-token loss is `lab.gem.lm_loss` (shared with evaluation's perplexity), re-exported here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..gem.lm_loss import IGNORE_INDEX, ntp_loss, ntp_loss_sum
from .config import TrainConfig

__all__ = ["IGNORE_INDEX", "LogitScale", "alpha_at", "info_nce", "lr_at", "ntp_loss", "ntp_loss_sum",
           "similarity_distillation"]


class LogitScale(nn.Module):
    """tau = exp(lambda), lambda learnable, initialised ln(init), clamped to [0, ln(max)] (CLIP-style)."""

    def __init__(self, init: float = 20.0, max_scale: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, self.max_log).exp()


def _in_batch_logits(q: torch.Tensor, d: torch.Tensor, scale, offset: int = 0, groups_q: torch.Tensor | None = None,
                     groups_d: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) scale * cos(q_i, d_j); d_j of q_i's group other than its own positive d[offset + i]
    set to -inf (left out of any softmax over the row)."""
    sim = scale * (F.normalize(q.float(), dim=-1) @ F.normalize(d.float(), dim=-1).T)
    if groups_q is not None:
        same = groups_q[:, None] == groups_d[None, :]
        same[torch.arange(q.shape[0]), offset + torch.arange(q.shape[0], device=q.device)] = False
        sim = sim.masked_fill(same, float("-inf"))
    return sim


def info_nce(q: torch.Tensor, d: torch.Tensor, scale: torch.Tensor, offset: int = 0,
             groups_q: torch.Tensor | None = None, groups_d: torch.Tensor | None = None) -> torch.Tensor:
    """-mean_i log softmax_j(scale * cos(q_i, d_j))[offset + i]: in-batch negatives.

    q: (B, dim) this process's queries; d: (N, dim) the positives of all processes (N >= B), the
    positive of q_i being d[offset + i]. Single process: N = B, offset = 0.
    groups_q (B,), groups_d (N,): optional source ids (e.g. article); d_j of q_i's group other than
    its own positive is not a negative (it is left out of the softmax).
    """
    target = offset + torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(_in_batch_logits(q, d, scale, offset, groups_q, groups_d), target)


def similarity_distillation(q: torch.Tensor, d: torch.Tensor, teacher_q: torch.Tensor, teacher_d: torch.Tensor,
                            scale: float, offset: int = 0, groups_q: torch.Tensor | None = None,
                            groups_d: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i KL(p_teacher,i || p_student,i): each query's distribution over the in-batch positives.

    p_.,i = softmax_j(scale * cos(q_i, d_j)), from the student's views (q (B, dim), d (N, dim)) and
    from a teacher's embeddings of the same texts (teacher_q (B, t), teacher_d (N, t)). The
    student learns the teacher's whole ranking of the batch, not only which one is the positive.
    Same-group entries other than the positive are left out of both softmaxes (as in `info_nce`).
    """
    student = F.log_softmax(_in_batch_logits(q, d, scale, offset, groups_q, groups_d), dim=-1)
    teacher = F.log_softmax(_in_batch_logits(teacher_q, teacher_d, scale, offset, groups_q, groups_d), dim=-1).detach()
    kl = teacher.exp() * (teacher - student)
    return kl.nan_to_num(0.0).sum(-1).mean()  # -inf - -inf (left-out entries) -> 0


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
