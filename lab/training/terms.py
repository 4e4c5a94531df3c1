"""The optional terms of the GEM objective: one small class each, one interface.

A term has a `name` (its key in the logs), a `weight` and a `phase`: "ntp" terms join the NTP side
of the loss (weighted by 1 - alpha), "contrastive" terms the InfoNCE side (weighted by alpha).
`term(states)` returns a scalar from what the objective already computed this step (`StepStates`):
the NTP rows' forward and last-layer states, the view embeddings q and d. A term that needs the
NTP rows' states says so (`needs_hidden`), so the objective keeps them.

    anchor               1 - cos(embedding at each row's S, the starting model's)     phase ntp
    distill_similarity   KL(teacher || student) of in-batch similarity distributions  phase contrastive
    distill_embedding    1 - cos(view embedding, the teacher's embedding)             phase contrastive
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..gem.forward import decoder_of
from ..gem.pooling import pooled_at
from .losses import embedding_distillation, similarity_distillation


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(world * B, ...) concatenation of every process's x; gradients flow back to their owners."""
    from torch.distributed.nn.functional import all_gather as gather

    return torch.cat(gather(x.contiguous()), dim=0)


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """(world * B, ...) concatenation of every process's x, without gradients."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@dataclass
class StepStates:
    """What the objective computed this step, for the terms to read.

    batch: the collated batch. ntp_inputs / hidden: the NTP rows' forward kwargs and last-layer
    states (B, T, d) (hidden only if a term needs it). q / d: (N, e) embeddings of this process's
    query and positive views. readout_head: the trained head on the pooled S state, or None.
    """

    batch: dict
    readout_head: torch.nn.Module | None = None
    ntp_inputs: dict | None = None
    hidden: torch.Tensor | None = None
    q: torch.Tensor | None = None
    d: torch.Tensor | None = None
    _teacher: dict = field(default_factory=dict)

    def teacher_views(self, teacher) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, t) float32 teacher embeddings of the query and positive views' texts, on q's device;
        computed once per step however many terms ask."""
        if "views" not in self._teacher:
            if "query_texts" not in self.batch:
                raise ValueError("a distillation term needs the views' texts in the batch (query_texts / "
                                 "positive_texts, written by GemCollator in the contrastive phase)")
            self._teacher["views"] = tuple(
                torch.as_tensor(teacher(self.batch[key]), dtype=torch.float32, device=self.q.device)
                for key in ("query_texts", "positive_texts"))
        return self._teacher["views"]


class Term:
    """An extension term: `weight * term(states)` joins the loss on the side of its `phase`."""

    name: str = ""
    phase: str = "contrastive"  # "ntp" | "contrastive"
    needs_hidden: bool = False

    def __init__(self, weight: float):
        self.weight = float(weight)

    def __call__(self, states: StepStates) -> torch.Tensor:
        raise NotImplementedError


class AnchorTerm(Term):
    """Holds the embedding where a starting model had it while a second stage trains: mean over the
    batch's rows with S of 1 - cos(this model's embedding at S, the frozen `reference` GemModel's
    embedding at the same S), both read from the same packed NTP rows (S sees only its row's text,
    so its state is that text's embedding). Asks nothing new of S: what else S learns (e.g. the
    text for reconstruction) is free to grow in the other directions and layers."""

    name, phase, needs_hidden = "anchor", "ntp", True

    def __init__(self, weight: float, reference):
        super().__init__(weight)
        if reference is None:
            raise ValueError("the anchor needs the frozen starting model (a GemModel; the training loop loads it "
                             "from run.init_from)")
        self.reference = reference  # a GemModel; not a Module attribute: neither trained nor DDP-wrapped

    def __call__(self, states: StepStates) -> torch.Tensor:
        index = states.batch["s_index"]
        if index.numel() == 0:  # only plain rows
            return states.hidden.new_zeros((), dtype=torch.float32)
        student = pooled_at(states.hidden, index)
        if states.readout_head is not None:
            student = states.readout_head(student)
        with torch.no_grad():
            target = pooled_at(decoder_of(self.reference.model)(**states.ntp_inputs).last_hidden_state, index)
            if self.reference.readout_head is not None:
                target = self.reference.readout_head(target)
        return embedding_distillation(student, target)


class SimilarityDistillation(Term):
    """KL(teacher || student) of each view's similarity distribution over all views of the (global)
    batch, queries and positives together, at scale `scale` (1 / temperature)."""

    name = "distill_similarity"

    def __init__(self, weight: float, teacher, scale: float = 20.0):
        super().__init__(weight)
        self.teacher, self.scale = teacher, scale

    def __call__(self, states: StepStates) -> torch.Tensor:
        q, d = states.q, states.d
        teacher_q, teacher_d = states.teacher_views(self.teacher)
        rank, size = world()
        if size == 1:
            return similarity_distillation(torch.cat([q, d]), torch.cat([teacher_q, teacher_d]), self.scale)
        b = q.shape[0]  # every process's views are candidates; this process's are the rows
        all_q, all_d = all_gather_with_grad(q), all_gather_with_grad(d)
        student = torch.cat([all_q, all_d])
        teacher = torch.cat([all_gather(teacher_q), all_gather(teacher_d)])
        own = torch.arange(b, device=q.device) + rank * b
        return similarity_distillation(student, teacher, self.scale, torch.cat([own, own + all_q.shape[0]]))


class EmbeddingDistillation(Term):
    """Mean 1 - cos(view embedding, the teacher's embedding of the same text) over this process's
    query and positive views; the embedding must live in the teacher's space (gem.readout_dim)."""

    name = "distill_embedding"

    def __init__(self, weight: float, teacher):
        super().__init__(weight)
        self.teacher = teacher

    def __call__(self, states: StepStates) -> torch.Tensor:
        teacher_q, teacher_d = states.teacher_views(self.teacher)
        return embedding_distillation(torch.cat([states.q, states.d]), torch.cat([teacher_q, teacher_d]))
