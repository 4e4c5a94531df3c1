"""Next-token cross-entropy: the NTP training loss and the perplexity of evaluation share it.

Labels are aligned with `input_ids` (the logits at position t predict labels[t + 1]);
`IGNORE_INDEX` marks positions that are never a target (padding, S, a segment's first token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def ntp_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token cross-entropy, number of target tokens), for means over batches or processes.

    logits: (B, T, V); labels: (B, T) long with IGNORE_INDEX where nothing is predicted.
    """
    targets = labels[:, 1:].flatten()
    total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets, ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total, (targets != IGNORE_INDEX).sum()


def ntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens (see `ntp_loss_sum`)."""
    total, count = ntp_loss_sum(logits, labels)
    return total / count.clamp(min=1)


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T - 1) float32: the cross-entropy of predicting token t + 1 at each position t, written
    out as -log softmax(logits)[target]; NaN where labels[t + 1] is IGNORE_INDEX. Its nanmean equals
    `ntp_loss` (tested): the loss the trainer averages, one token at a time."""
    targets = labels[:, 1:]
    log_probs = logits[:, :-1].float().log_softmax(-1)
    picked = -log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return torch.where(targets != IGNORE_INDEX, picked, torch.full_like(picked, float("nan")))
