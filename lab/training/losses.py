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
           "similarity_distillation", "embedding_distillation"]


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


def similarity_distillation(student: torch.Tensor, teacher: torch.Tensor, scale: float,
                            rows: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i KL(p_teacher,i || p_student,i): each view's distribution over every other view.

    student (M, dim) and teacher (M, t): the two models' embeddings of the same M texts (all views
    of the batch: queries and positives). p_.,i = softmax_{j != i}(scale * cos(x_i, x_j)). Every
    text is a row and every other text a candidate, so one batch of B pairs gives 2B rows of
    2B - 1 graded targets: the student learns the teacher's whole similarity structure (which
    texts are close, how close, which are far), not only which one is the positive.
    rows: optional (R,) indices of the rows this process owns (across processes: the others'
    views are gathered as candidates); default all M.
    """
    def log_probs(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.float(), dim=-1)
        sel = x if rows is None else x[rows]
        sim = scale * (sel @ x.T)
        own = torch.arange(x.shape[0], device=x.device) if rows is None else rows
        sim[torch.arange(sel.shape[0], device=x.device), own] = float("-inf")
        return F.log_softmax(sim, dim=-1)

    s, t = log_probs(student), log_probs(teacher).detach()
    kl = t.exp() * (t - s)
    return kl.nan_to_num(0.0).sum(-1).mean()  # -inf - -inf (a view against itself) -> 0


def embedding_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean_i (1 - cos(student_i, teacher_i)): each text's embedding pulled onto the teacher's.

    student (M, t), teacher (M, t): the same M texts, in the same space (the student's readout
    head maps into the teacher's width, `readout_dim`). Denser than `similarity_distillation`:
    t targets per text instead of one distribution over the batch.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"embedding distillation needs the student's embeddings in the teacher's space: got "
                         f"{tuple(student.shape)} vs the teacher's {tuple(teacher.shape)}; set readout_head: true "
                         f"and readout_dim: {teacher.shape[-1]}")
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def alpha_at(step: int, cfg: TrainConfig) -> float:
    """Weight of the contrastive loss at `step` (0-based): 0 during the NTP phase, then alpha_cl."""
    return 0.0 if step < cfg.objective.ntp_steps else cfg.objective.alpha_cl


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at `step`: warmup + cosine in the NTP phase, then cosine from lr_cl."""
    def cosine(t: int, length: int, peak: float) -> float:
        frac = min(max(t / max(length, 1), 0.0), 1.0)
        floor = peak * cfg.optim.min_lr_ratio
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    if step < cfg.objective.ntp_steps:
        if step < cfg.optim.warmup_steps:
            return cfg.optim.lr_ntp * (step + 1) / cfg.optim.warmup_steps
        return cosine(step - cfg.optim.warmup_steps, cfg.objective.ntp_steps - cfg.optim.warmup_steps, cfg.optim.lr_ntp)
    return cosine(step - cfg.objective.ntp_steps, cfg.optim.steps - cfg.objective.ntp_steps, cfg.optim.lr_cl)
