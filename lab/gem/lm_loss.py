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


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `targets`, computed chunk by chunk.

    The (N, V) logits are never stored: each chunk's gradient with respect to `hidden` is computed
    in the forward pass (softmax - one-hot, times the weight) and kept, (N, d). The weight gets a
    gradient only in its `grad_rows` (e.g. the new GEM tokens of a tied head): the full (V, d)
    weight gradient, 2·N·V·d FLOPs that a frozen head would throw away, is never computed.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, grad_rows, chunk):
        total = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden, dtype=torch.float32)
        grad_rows_w = hidden.new_zeros((len(grad_rows), hidden.shape[-1]), dtype=torch.float32)
        w = weight.float()
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk].float()
            t = targets[start:start + chunk]
            logits = h @ w.T  # (c, V)
            lse = logits.logsumexp(-1)
            total += (lse - logits.gather(-1, t[:, None])[:, 0]).sum()
            dlogits = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            dlogits[torch.arange(len(t), device=t.device), t] -= 1.0
            grad_hidden[start:start + chunk] = dlogits @ w
            if len(grad_rows):
                grad_rows_w += dlogits[:, grad_rows].T @ h
        ctx.save_for_backward(grad_hidden, grad_rows_w, grad_rows)
        ctx.weight_shape, ctx.weight_dtype, ctx.hidden_dtype = weight.shape, weight.dtype, hidden.dtype
        ctx.weight_needs_grad = weight.requires_grad
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_rows_w, grad_rows = ctx.saved_tensors
        grad_h = (grad_hidden * grad_total).to(ctx.hidden_dtype)
        grad_w = None
        if ctx.weight_needs_grad:
            grad_w = torch.zeros(ctx.weight_shape, dtype=ctx.weight_dtype, device=grad_hidden.device)
            grad_w[grad_rows] = (grad_rows_w * grad_total).to(ctx.weight_dtype)
        return grad_h, grad_w, None, None, None


def ntp_loss_sum_from_hidden(hidden: torch.Tensor, head_weight: torch.Tensor, labels: torch.Tensor,
                             grad_rows: list[int] = (), chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """`ntp_loss_sum(hidden @ head_weight.T, labels)` without the full logits: the head runs only
    at positions that predict a target, chunk by chunk, and the head weight gets gradients only in
    `grad_rows` (the rest is frozen; tested equal to the reference on the rows that train).

    hidden: (B, T, d) final-norm states; head_weight: (V, d) (no bias, no soft-capping);
    labels: (B, T) aligned with the inputs, IGNORE_INDEX where nothing is predicted.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    h = hidden[:, :-1][keep]  # (N, d): the positions that predict a target
    rows = torch.as_tensor(list(grad_rows), dtype=torch.long, device=hidden.device)
    total = _LinearCrossEntropy.apply(h, head_weight, targets[keep], rows, chunk)
    return total, keep.sum()
