"""The NTP loss without full-vocabulary logits: the LM head runs only where a target is predicted,
in chunks, and its weight gets a gradient only in the rows that train (the GEM rows of a tied head
under LoRA). Same loss and gradients as the reference path (tests/test_fast_step.py)."""

from __future__ import annotations

import torch
from torch import nn

from ..gem.forward import unwrap
from ..gem.lm_loss import IGNORE_INDEX


def fusable_head(model) -> torch.Tensor | None:
    """The LM head weight (V, d) when the head is a plain bias-free linear map of the final-norm
    states (so the NTP loss can run from hidden states, `ntp_loss_sum_from_hidden`), else None
    (e.g. Gemma's final logit soft-capping: then the model's own logits are used)."""
    base = unwrap(model)
    head = base.get_output_embeddings()
    plain = isinstance(head, nn.Linear) and head.bias is None and type(head) is nn.Linear
    if not plain or getattr(base.config, "final_logit_softcapping", None):
        return None
    return head.weight


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
