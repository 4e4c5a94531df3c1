"""The GEM training objective as one module, so DDP / FSDP / DeepSpeed wrap the whole loss.

    objective = GemObjective(model, logit_scale)
    out = objective(batch, alpha)      # {"loss", "ntp", "cl", "scale"}

NTP runs the full causal LM under the GEM mask on the training rows; the contrastive term reads
the last-layer states at S for the two views (query, positive) without the LM head. Only the
terms with non-zero weight are computed (alpha = 0: NTP only; alpha = 1: contrastive only).
"""

from __future__ import annotations

import torch
from torch import nn

from .forward import gem_inputs, unwrap
from .losses import LogitScale, info_nce, ntp_loss
from .masks import Role, model_attention_mask
from .pooling import pool_states


class GemObjective(nn.Module):
    def __init__(self, model: nn.Module, logit_scale: LogitScale, suffix_sees_bos: bool = False):
        super().__init__()
        self.model = model
        self.logit_scale = logit_scale
        self.suffix_sees_bos = suffix_sees_bos

    def _view_embeddings(self, view: dict) -> torch.Tensor:
        """(B, d) mean of the last-layer states at the S positions of a view."""
        inputs = gem_inputs(self.model, view["input_ids"], view["roles"], suffix_sees_bos=self.suffix_sees_bos)
        hidden = unwrap(self.model).get_decoder()(**inputs).last_hidden_state
        return pool_states(hidden, view["roles"] == Role.SPECIAL)

    def forward(self, batch: dict, alpha: float) -> dict[str, torch.Tensor]:
        zero = self.logit_scale.log_scale.new_zeros(())
        ntp = cl = zero
        if alpha < 1.0:
            base = unwrap(self.model)
            dtype = next(base.parameters()).dtype
            logits = self.model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                attention_mask=model_attention_mask(batch["attention_mask"], base.config, dtype),
            ).logits
            ntp = ntp_loss(logits, batch["labels"])
        scale = self.logit_scale()
        if alpha > 0.0:
            q = self._view_embeddings(batch["query"])
            d = self._view_embeddings(batch["positive"])
            cl = info_nce(q, d, scale)
        loss = (1.0 - alpha) * ntp + alpha * cl
        return {"loss": loss, "ntp": ntp.detach(), "cl": cl.detach(), "scale": scale.detach()}
