"""The GEM training objective as one module, so DDP / FSDP / DeepSpeed wrap the whole loss.

    objective = GemObjective(model, logit_scale)
    out = objective(batch, alpha)      # {"backward", "loss", "ntp", "cl", "scale"}
    out["backward"].backward()         # the others are detached values for logging

NTP runs the full causal LM under the GEM mask on the training rows; the contrastive term reads
the last-layer states at S for the two views (query, positive) without the LM head. Only the
terms with non-zero weight are computed (alpha = 0: NTP only; alpha = 1: contrastive only).

Across processes (DDP / FSDP) the result equals one process with the same global batch: the NTP
sum is divided by the token count of the *global* batch, and the positives of every process are
gathered (with gradients) so that each query sees the whole global batch as negatives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..gem.forward import gem_inputs, unwrap
from ..gem.lm_loss import ntp_loss_sum, ntp_loss_sum_from_hidden
from ..gem.masks import model_attention_mask
from .losses import LogitScale, info_nce


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(world * B, ...) concatenation of every process's x; gradients flow back to their owners."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


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


class GemObjective(nn.Module):
    def __init__(self, model: nn.Module, logit_scale: LogitScale, suffix_sees_bos: bool = False,
                 fused_loss: bool = True, trainable_head_rows: list[int] | None = None):
        super().__init__()
        self.model = model
        self.logit_scale = logit_scale
        self.suffix_sees_bos = suffix_sees_bos
        self.fused_loss = fused_loss
        # rows of the LM head weight that train (LoRA: the new GEM rows of a tied head); None: all
        self.trainable_head_rows = None if trainable_head_rows is None else list(trainable_head_rows)

    def view_embeddings(self, view: dict) -> torch.Tensor:
        """(N, d): per row of a view batch, the mean of the last-layer states at its S tokens."""
        inputs = gem_inputs(self.model, view["input_ids"], view["roles"], view.get("segment_ids"),
                            suffix_sees_bos=self.suffix_sees_bos)
        hidden = unwrap(self.model).get_decoder()(**inputs).last_hidden_state
        flat = hidden.reshape(-1, hidden.shape[-1])
        return flat[view["s_index"]].float().mean(1)

    def _ntp_sum(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NTP cross-entropy, target count) of the training rows."""
        base = unwrap(self.model)
        mask = model_attention_mask(batch["attention_mask"], base.config, next(base.parameters()).dtype)
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "attention_mask": mask}
        head = fusable_head(self.model) if self.fused_loss else None
        if head is not None and head.requires_grad and self.trainable_head_rows is None:
            head = None  # a fully trained head needs its whole gradient: the reference path gives it
        if head is None:
            return ntp_loss_sum(self.model(**inputs).logits, batch["labels"])
        hidden = base.get_decoder()(**inputs).last_hidden_state
        rows = self.trainable_head_rows if head.requires_grad else ()
        return ntp_loss_sum_from_hidden(hidden, head, batch["labels"], grad_rows=rows)

    def forward(self, batch: dict, alpha: float) -> dict[str, torch.Tensor]:
        zero = self.logit_scale.log_scale.new_zeros(())
        ntp = cl = zero
        if alpha < 1.0:
            total, count = self._ntp_sum(batch)
            rank, world = _world()
            if world > 1:  # DDP averages gradients over processes: scale by world / global count
                count = count.clone()
                dist.all_reduce(count)
                total = total * world
            ntp = total / count.clamp(min=1)
        scale = self.logit_scale()
        if alpha > 0.0:
            q = self.view_embeddings(batch["query"])
            d = self.view_embeddings(batch["positive"])
            rank, world = _world()
            groups = batch.get("groups")
            if world > 1:
                all_groups = None
                if groups is not None:
                    all_groups = [torch.empty_like(groups) for _ in range(world)]
                    dist.all_gather(all_groups, groups)
                    all_groups = torch.cat(all_groups)
                cl = info_nce(q, _all_gather_with_grad(d), scale, offset=rank * q.shape[0],
                              groups_q=groups, groups_d=all_groups)
            else:
                cl = info_nce(q, d, scale, groups_q=groups, groups_d=groups)
        loss = (1.0 - alpha) * ntp + alpha * cl
        ntp_report, cl_report = ntp.detach().clone(), cl.detach().clone()
        _, world = _world()
        if world > 1:  # report the global-batch values: what one process would print
            for t in (ntp_report, cl_report):
                dist.all_reduce(t)
                t /= world
        return {"backward": loss, "loss": (1.0 - alpha) * ntp_report + alpha * cl_report,
                "ntp": ntp_report, "cl": cl_report, "scale": scale.detach()}


@torch.no_grad()
def view_similarity(model, batch: dict, suffix_sees_bos: bool = False) -> torch.Tensor:
    """(N, N) cosines between the query views (rows) and the positive views (columns) of a collated
    contrastive batch: what InfoNCE sees. Its diagonal holds the positives, the rest the in-batch
    negatives; training should make the diagonal stand out."""
    objective = GemObjective(model, LogitScale(), suffix_sees_bos)
    q = torch.nn.functional.normalize(objective.view_embeddings(batch["query"]), dim=-1)
    d = torch.nn.functional.normalize(objective.view_embeddings(batch["positive"]), dim=-1)
    return q @ d.T
