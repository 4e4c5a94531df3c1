"""The GEM training objective as one module, so DDP / FSDP / DeepSpeed wrap the whole loss.

    objective = GemObjective(model, logit_scale)
    out = objective(batch, alpha)      # {"backward", "loss", "ntp", "cl", "kd", "ke", "ka", "scale"}
    out["backward"].backward()         # the others are detached values for logging

NTP runs the full causal LM under the GEM mask on the training rows; the contrastive term reads
the last-layer states at S for the two views (query, positive) without the LM head. Only the
terms with non-zero weight are computed (alpha = 0: NTP only; alpha = 1: contrastive only). With
`distill_weight` > 0 the contrastive phase adds a distillation term: over all views of the batch
(queries and positives), each view's similarity distribution over the others is pulled to a
teacher's (`similarity_distillation`; the collator puts the teacher's embeddings of the same view
texts in the batch).

With `anchor_weight` > 0 (a second stage from a trained model, `TrainConfig.init_from`), the NTP
term gets a companion that holds the embedding where that model had it: for every training row
with S, 1 - cos(this model's embedding at S, the frozen starting model's embedding at the same
S), both read from the same packed batch (the S states see only their row's text, so they are the
text's embedding). Unlike the contrastive term it asks nothing new of S, so whatever else S
learns to carry (e.g. the text for reconstruction) is free to grow in the states' other directions
and in the other layers.

Across processes (DDP / FSDP) the result equals one process with the same global batch: the NTP
sum is divided by the token count of the *global* batch, and the positives of every process are
gathered (with gradients) so that each query sees the whole global batch as negatives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..gem.forward import decoder_of, gem_inputs, unwrap
from ..gem.lm_loss import ntp_loss_sum, ntp_loss_sum_from_hidden
from ..gem.masks import model_attention_mask
from .losses import LogitScale, embedding_distillation, info_nce, similarity_distillation


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(world * B, ...) concatenation of every process's x; gradients flow back to their owners."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    """(world * B, ...) concatenation of every process's x, without gradients."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


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
                 fused_loss: bool = True, trainable_head_rows: list[int] | None = None,
                 distill_weight: float = 0.0, distill_scale: float = 20.0, readout_head: nn.Module | None = None,
                 distill_embedding_weight: float = 0.0, anchor_weight: float = 0.0, anchor_reference=None):
        super().__init__()
        if anchor_weight > 0 and anchor_reference is None:
            raise ValueError("anchor_weight > 0 needs the frozen starting model (anchor_reference: a GemModel; "
                             "the training loop loads it from cfg.init_from)")
        # a GemModel (not a Module attribute: its weights are neither trained nor wrapped by DDP)
        self.anchor_weight, self.anchor_reference = anchor_weight, anchor_reference
        self.distill_embedding_weight = distill_embedding_weight
        self.readout_head = readout_head  # trained with the objective (its parameters are the objective's)
        self.distill_weight, self.distill_scale = distill_weight, distill_scale
        self.model = model
        self.logit_scale = logit_scale
        self.suffix_sees_bos = suffix_sees_bos
        self.fused_loss = fused_loss
        # rows of the LM head weight that train (LoRA: the new GEM rows of a tied head); None: all
        self.trainable_head_rows = None if trainable_head_rows is None else list(trainable_head_rows)

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

    def _ntp_inputs(self, batch: dict) -> dict:
        """Keyword arguments of the NTP forward (the training rows, packed, under the GEM mask)."""
        base = unwrap(self.model)
        mask = model_attention_mask(batch["attention_mask"], base.config, next(base.parameters()).dtype)
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "attention_mask": mask}

    def _ntp_sum(self, batch: dict, inputs: dict, keep_hidden: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(summed NTP cross-entropy, target count, the last-layer states (B, T, d)) of the training
        rows; the states are None on the logits path unless keep_hidden (the fused path has them anyway)."""
        base = unwrap(self.model)
        head = fusable_head(self.model) if self.fused_loss else None
        if head is not None and head.requires_grad and self.trainable_head_rows is None:
            head = None  # a fully trained head needs its whole gradient: the reference path gives it
        if head is None:
            out = self.model(**inputs, output_hidden_states=keep_hidden)
            return (*ntp_loss_sum(out.logits, batch["labels"]), out.hidden_states[-1] if keep_hidden else None)
        hidden = base.get_decoder()(**inputs).last_hidden_state
        rows = self.trainable_head_rows if head.requires_grad else ()
        return (*ntp_loss_sum_from_hidden(hidden, head, batch["labels"], grad_rows=rows), hidden)

    def _anchor(self, batch: dict, inputs: dict, hidden: torch.Tensor) -> torch.Tensor:
        """mean over the batch's rows with S of 1 - cos(embedding, the starting model's embedding)."""
        index = batch["s_index"]
        if index.numel() == 0:  # only plain rows
            return hidden.new_zeros((), dtype=torch.float32)
        student = pooled_at(hidden, index)
        if self.readout_head is not None:
            student = self.readout_head(student)
        reference = self.anchor_reference
        with torch.no_grad():
            target = pooled_at(decoder_of(reference.model)(**inputs).last_hidden_state, index)
            if reference.readout_head is not None:
                target = reference.readout_head(target)
        return embedding_distillation(student, target)

    def forward(self, batch: dict, alpha: float) -> dict[str, torch.Tensor]:
        zero = self.logit_scale.log_scale.new_zeros(())
        ntp = cl = ka = zero
        if alpha < 1.0:
            inputs = self._ntp_inputs(batch)
            total, count, hidden = self._ntp_sum(batch, inputs, keep_hidden=self.anchor_weight > 0)
            rank, world = _world()
            if world > 1:  # DDP averages gradients over processes: scale by world / global count
                count = count.clone()
                dist.all_reduce(count)
                total = total * world
            ntp = total / count.clamp(min=1)
            if self.anchor_weight > 0:
                ka = self._anchor(batch, inputs, hidden)
        scale = self.logit_scale()
        kd = ke = zero
        if alpha > 0.0:
            cl, kd, ke = self._contrastive(batch, scale)
        loss = ((1.0 - alpha) * (ntp + self.anchor_weight * ka)
                + alpha * (cl + self.distill_weight * kd + self.distill_embedding_weight * ke))
        reports = [t.detach().clone() for t in (ntp, cl, kd, ke, ka)]
        _, world = _world()
        if world > 1:  # report the global-batch values: what one process would print
            for t in reports:
                dist.all_reduce(t)
                t /= world
        ntp_report, cl_report, kd_report, ke_report, ka_report = reports
        total = ((1.0 - alpha) * (ntp_report + self.anchor_weight * ka_report)
                 + alpha * (cl_report + self.distill_weight * kd_report + self.distill_embedding_weight * ke_report))
        return {"backward": loss, "loss": total, "ntp": ntp_report, "cl": cl_report, "kd": kd_report,
                "ke": ke_report, "ka": ka_report, "scale": scale.detach()}

    def _contrastive(self, batch: dict, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(InfoNCE, similarity distillation KL or 0, embedding distillation or 0) of the two views;
        across processes the positives (and the teacher's views) of the whole global batch are the
        candidates."""
        q = self.view_embeddings(batch["query"])
        d = self.view_embeddings(batch["positive"])
        ke = q.new_zeros(())
        if self.distill_embedding_weight > 0:
            ke = embedding_distillation(torch.cat([q, d]), self._teacher_views(batch))
        groups, teacher_d = batch.get("groups"), batch.get("teacher_positive")
        rank, world = _world()
        offset, all_groups = 0, groups
        if world > 1:
            offset, d = rank * q.shape[0], _all_gather_with_grad(d)
            all_groups = _all_gather(groups) if groups is not None else None
            teacher_d = _all_gather(teacher_d) if teacher_d is not None else None
        cl = info_nce(q, d, scale, offset=offset, groups_q=groups, groups_d=all_groups)
        kd = cl.new_zeros(())
        if self.distill_weight > 0:
            teacher_q = batch.get("teacher_query")
            if teacher_q is None:
                raise ValueError("distill_weight > 0 needs the teacher's embeddings in the batch "
                                 "(GemCollator(teacher=...); the training loop sets it from cfg.teacher)")
            student, teacher, rows = torch.cat([q, d]), torch.cat([teacher_q, batch["teacher_positive"]]), None
            if world > 1:  # every process's views are candidates; this process's are the rows
                b = q.shape[0]
                all_q, all_tq = _all_gather_with_grad(q), _all_gather(teacher_q)
                student, teacher = torch.cat([all_q, d]), torch.cat([all_tq, teacher_d])
                own = torch.arange(b, device=q.device) + rank * b
                rows = torch.cat([own, own + all_q.shape[0]])
            kd = similarity_distillation(student, teacher, self.distill_scale, rows)
        return cl, kd, ke

    @staticmethod
    def _teacher_views(batch: dict) -> torch.Tensor:
        """(2B, t) the teacher's embeddings of this process's query then positive views."""
        if batch.get("teacher_query") is None:
            raise ValueError("distillation needs the teacher's embeddings in the batch "
                             "(GemCollator(teacher=...); the training loop sets it from cfg.teacher)")
        return torch.cat([batch["teacher_query"], batch["teacher_positive"]])


def pooled_at(hidden: torch.Tensor, s_index: torch.Tensor) -> torch.Tensor:
    """(N, d) float32: the mean of hidden (B, T, d) over each row's S positions, s_index (N, k)
    flat indices into B * T (`lab.training.collate.s_index`)."""
    return hidden.reshape(-1, hidden.shape[-1])[s_index].float().mean(1)


@torch.no_grad()
def view_similarity(model, batch: dict, suffix_sees_bos: bool = False) -> torch.Tensor:
    """(N, N) cosines between the query views (rows) and the positive views (columns) of a collated
    contrastive batch: what InfoNCE sees. Its diagonal holds the positives, the rest the in-batch
    negatives; training should make the diagonal stand out."""
    objective = GemObjective(model, LogitScale(), suffix_sees_bos)
    q = torch.nn.functional.normalize(objective.view_embeddings(batch["query"]), dim=-1)
    d = torch.nn.functional.normalize(objective.view_embeddings(batch["positive"]), dim=-1)
    return q @ d.T
