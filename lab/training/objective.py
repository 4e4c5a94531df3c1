"""The GEM training objective as one module, so DDP / FSDP / DeepSpeed wrap the whole loss.

    L = (1 - alpha) (L_ntp + sum_t w_t t) + alpha (L_cl + sum_t w_t t)

L_ntp (the paper): next-token cross-entropy of the training rows under the GEM mask.
L_cl  (the paper): InfoNCE between the query view `text | S` and its positive, the other
                   positives of the (global) batch as negatives; embeddings are the mean of the
                   last-layer states at S (then the readout head, if any).
t:    optional extension terms (`lab.training.terms`), each with a name, a weight and the side of
      alpha it joins ("ntp" or "contrastive"); e.g. the anchor, similarity and embedding
      distillation. Only the terms with non-zero weight exist.

    objective = GemObjective(model, logit_scale, terms=[...])
    out = objective(batch, alpha)   # {"backward", "loss", "ntp", "cl", <term names>, "scale"}
    out["backward"].backward()      # the others are detached values for logging

Across processes (DDP / FSDP) the result equals one process with the same global batch: the NTP
sum is divided by the token count of the *global* batch, and the positives of every process are
gathered (with gradients) so that each query sees the whole global batch as negatives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..gem.forward import gem_inputs, unwrap
from ..gem.lm_loss import ntp_loss_sum
from ..gem.pooling import pooled_at
from .fused_loss import fusable_head, ntp_loss_sum_from_hidden
from .losses import LogitScale, info_nce
from .terms import StepStates, Term, all_gather, all_gather_with_grad, world


class GemObjective(nn.Module):
    """NTP + InfoNCE on a collated GEM batch, plus any extension `terms`.

    model: the (LoRA-wrapped) causal LM. logit_scale: InfoNCE's learned 1 / temperature.
    readout_head: the trainable map on the pooled S state (its parameters are the objective's).
    trainable_head_rows: rows of the LM head weight that train (the GEM rows of a tied head under
        LoRA); None: all. fused_loss: the NTP loss from hidden states without full-vocabulary
        logits (same loss, less memory; False: the reference path through the model's logits).
    """

    def __init__(self, model: nn.Module, logit_scale: LogitScale, suffix_sees_bos: bool = False, *,
                 readout_head: nn.Module | None = None, terms: list[Term] = (),
                 trainable_head_rows: list[int] | None = None, fused_loss: bool = True):
        super().__init__()
        # registration order = parameter order (grad clipping sums norms in it): head, model, scale
        self.readout_head, self.model, self.logit_scale = readout_head, model, logit_scale
        self.suffix_sees_bos = suffix_sees_bos
        self.terms = [t for t in terms if t.weight > 0]
        self.trainable_head_rows = None if trainable_head_rows is None else list(trainable_head_rows)
        self.fused_loss = fused_loss

    @property
    def loss_names(self) -> tuple[str, ...]:
        """The logged parts of the loss: "loss", "ntp", "cl" and each term's name."""
        return ("loss", "ntp", "cl", *(t.name for t in self.terms))

    def forward(self, batch: dict, alpha: float) -> dict[str, torch.Tensor]:
        zero = self.logit_scale.log_scale.new_zeros(())
        parts = dict.fromkeys(self.loss_names[1:], zero)
        states = StepStates(batch, readout_head=self.readout_head)
        if alpha < 1.0:
            parts["ntp"] = self._ntp(batch, states)
        scale = self.logit_scale()
        if alpha > 0.0:
            parts["cl"] = self._contrastive(batch, states, scale)
        for term in self.terms:
            if (term.phase == "ntp" and alpha < 1.0) or (term.phase == "contrastive" and alpha > 0.0):
                parts[term.name] = term(states)
        reports = {k: v.detach().clone() for k, v in parts.items()}
        if world()[1] > 1:  # report the global-batch values: what one process would print
            for t in reports.values():
                dist.all_reduce(t)
                t /= world()[1]
        return {"backward": self.combine(parts, alpha), "loss": self.combine(reports, alpha), **reports,
                "scale": scale.detach()}

    def combine(self, parts: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
        """(1 - alpha) (ntp + the NTP-side terms) + alpha (cl + the contrastive-side terms)."""
        ntp_side, cl_side = parts["ntp"], parts["cl"]
        for t in self.terms:
            if t.phase == "ntp":
                ntp_side = ntp_side + t.weight * parts[t.name]
            else:
                cl_side = cl_side + t.weight * parts[t.name]
        return (1.0 - alpha) * ntp_side + alpha * cl_side

    # -- the paper's two terms ---------------------------------------------------------------------
    def _ntp(self, batch: dict, states: StepStates) -> torch.Tensor:
        """Mean NTP cross-entropy over the global batch's targets; keeps the rows' forward in `states`."""
        inputs = gem_inputs(self.model, batch["input_ids"], batch["roles"], batch.get("segment_ids"),
                            self.suffix_sees_bos)
        total, count, hidden = self._ntp_sum(batch, inputs, keep_hidden=any(t.needs_hidden for t in self.terms))
        states.ntp_inputs, states.hidden = inputs, hidden
        if world()[1] > 1:  # DDP averages gradients over processes: scale by world / global count
            count = count.clone()
            dist.all_reduce(count)
            total = total * world()[1]
        return total / count.clamp(min=1)

    def _ntp_sum(self, batch: dict, inputs: dict, keep_hidden: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(summed NTP cross-entropy, target count, the last-layer states (B, T, d) or None)."""
        head = fusable_head(self.model) if self.fused_loss else None
        if head is not None and head.requires_grad and self.trainable_head_rows is None:
            head = None  # a fully trained head needs its whole gradient: the reference path gives it
        if head is None:
            out = self.model(**inputs, output_hidden_states=keep_hidden)
            return (*ntp_loss_sum(out.logits, batch["labels"]), out.hidden_states[-1] if keep_hidden else None)
        hidden = unwrap(self.model).get_decoder()(**inputs).last_hidden_state
        rows = self.trainable_head_rows if head.requires_grad else ()
        return (*ntp_loss_sum_from_hidden(hidden, head, batch["labels"], grad_rows=rows), hidden)

    def _contrastive(self, batch: dict, states: StepStates, scale: torch.Tensor) -> torch.Tensor:
        """InfoNCE of the query views against the positives of the whole global batch."""
        states.q = self.view_embeddings(batch["query"])
        states.d = self.view_embeddings(batch["positive"])
        groups = batch.get("groups")
        rank, size = world()
        offset, d_all, all_groups = 0, states.d, groups
        if size > 1:
            offset, d_all = rank * states.q.shape[0], all_gather_with_grad(states.d)
            all_groups = all_gather(groups) if groups is not None else None
        return info_nce(states.q, d_all, scale, offset=offset, groups_q=groups, groups_d=all_groups)

    def view_embeddings(self, view: dict) -> torch.Tensor:
        """(N, e): per row of a view batch, the mean of the last-layer states at its S tokens, then
        the readout head, if any: what `GemModel.encode` returns before normalising."""
        emb = self.pooled_states(view)
        return emb if self.readout_head is None else self.readout_head(emb)

    def pooled_states(self, view: dict) -> torch.Tensor:
        """(N, d) float32: per row of a view batch, the mean of the last-layer states at its S tokens."""
        inputs = gem_inputs(self.model, view["input_ids"], view["roles"], view.get("segment_ids"),
                            suffix_sees_bos=self.suffix_sees_bos)
        hidden = unwrap(self.model).get_decoder()(**inputs).last_hidden_state
        return pooled_at(hidden, view["s_index"])


@torch.no_grad()
def view_similarity(model, batch: dict, suffix_sees_bos: bool = False, readout_head=None) -> torch.Tensor:
    """(N, N) cosines between the query views (rows) and the positive views (columns) of a collated
    contrastive batch: what InfoNCE sees. Its diagonal holds the positives, the rest the in-batch
    negatives; training should make the diagonal stand out. readout_head: the model's (a GemModel's
    `readout_head`), so that the cosines are those of its embeddings."""
    objective = GemObjective(model, LogitScale(), suffix_sees_bos, readout_head=readout_head)
    q = torch.nn.functional.normalize(objective.view_embeddings(batch["query"]), dim=-1)
    d = torch.nn.functional.normalize(objective.view_embeddings(batch["positive"]), dim=-1)
    return q @ d.T
