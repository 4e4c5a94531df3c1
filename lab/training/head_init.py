"""Start a projection readout head at the least-squares map from GEM states to a teacher's space.

A head that maps the pooled GEM state (d) into a distillation teacher's space (t, `readout_dim`)
starts random, and 1 - cos(head(x), teacher) then falls slowly: hidden states have a few
outlier dimensions that a random projection follows. Instead, when the contrastive phase starts,
the head is fitted in closed form (ridge regression) on `head_init_texts` training texts:

    X (N, d) pooled GEM states, Y (N, t) the teacher's unit embeddings of the same texts
    W = (Xs^T Xs + lam N I)^-1 Xs^T Yc / std(X),  b = mean(Y) - W mean(X)
    Xs: X centred and scaled to unit variance per dimension, Yc: Y centred;
    lam: the value of RIDGES with the best cosine on a held-out fifth of the texts

so distillation starts from the best linear readout of the model as it is, and training moves both.
With `head_refit` the head is fitted again before the last step: training moves the states faster
than the (small-step) head follows, and the final fit is the best linear readout of the final model.
"""

from __future__ import annotations

import logging
import random

import torch

from .spans import random_span

log = logging.getLogger(__name__)

RIDGES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def ridge_map(x: torch.Tensor, y: torch.Tensor, ridge: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (t, d), b (t,)) of the ridge regression y ~ x W^T + b on standardised features (each
    dimension of x scaled to unit variance, so that a few outlier dimensions of the hidden state
    do not take the fit), penalty lam = ridge * N. x (N, d), y (N, t)."""
    x, y = x.double(), y.double()
    mx, my, sx = x.mean(0), y.mean(0), x.std(0).clamp(min=1e-6)
    xs, yc = (x - mx) / sx, y - my
    gram = xs.T @ xs
    ws = torch.linalg.solve(gram + ridge * x.shape[0] * torch.eye(gram.shape[0], dtype=gram.dtype), xs.T @ yc)
    w = (ws / sx[:, None]).T
    return w.float(), (my - w @ mx).float()


def chosen_ridge(x: torch.Tensor, y: torch.Tensor, grid=RIDGES, held_out: float = 0.2, seed: int = 0) -> float:
    """The ridge of `grid` whose map, fitted on 80 % of the rows, gives the highest mean cosine
    with y on the other 20 %."""
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(held_out * x.shape[0]))
    val, fit = order[:n_val], order[n_val:]

    def score(r: float) -> float:
        w, b = ridge_map(x[fit], y[fit], r)
        return float(torch.nn.functional.cosine_similarity(x[val] @ w.T + b, y[val], dim=-1).mean())

    scores = {r: score(r) for r in grid}
    best = max(scores, key=scores.get)
    log.info("ridge by held-out cosine: %s -> %g", {r: round(s, 3) for r, s in scores.items()}, best)
    return best


@torch.no_grad()
def fit_head_to_teacher(objective, collator, teacher, texts: list[str], batch_size: int = 32,
                        ridge: float | None = None) -> float:
    """Set `objective.readout_head` to the ridge map from the pooled GEM states of `texts` (cut as
    the collator cuts views) to `teacher`'s embeddings (ridge: None = chosen on held-out texts); returns the mean
    cosine (head output vs teacher) it reaches on the texts."""
    head = objective.readout_head
    device = head.linear.weight.device
    states, targets = [], []
    for i in range(0, len(texts), batch_size):
        view, cut = collator.views_of(texts[i:i + batch_size])
        states.append(objective.pooled_states({k: v.to(device) for k, v in view.items()}).cpu())
        targets.append(torch.as_tensor(teacher(cut), dtype=torch.float32))
    x, y = torch.cat(states), torch.cat(targets)
    if y.shape[1] != head.out_dim:
        raise ValueError(f"the readout head maps to {head.out_dim} dimensions but the teacher gives {y.shape[1]}: "
                         f"set readout_dim: {y.shape[1]}")
    w, b = ridge_map(x, y, chosen_ridge(x, y) if ridge is None else ridge)
    head.linear.weight.copy_(w.to(head.linear.weight.dtype))
    head.linear.bias.copy_(b.to(head.linear.bias.dtype))
    fit = torch.nn.functional.cosine_similarity(head(x.to(device)).float().cpu(), y, dim=-1)
    log.info("readout head fitted to the teacher on %d texts: mean cosine %.3f", len(x), float(fit.mean()))
    return float(fit.mean())


def head_init_texts(corpus: list[str], n: int, seed: int, span_share: float = 0.0) -> list[str]:
    """n corpus texts drawn with `seed` (the same on every process and on resume); a share
    `span_share` of them cut to a few words (`lab.training.spans`), as the training queries are
    with `span_views`, so that the head is fitted on words and phrases too."""
    rng = random.Random(seed)
    idx = rng.sample(range(len(corpus)), min(n, len(corpus)))
    if span_share <= 0:
        return [corpus[i] for i in idx]
    return [(random_span(corpus[i], rng) if rng.random() < span_share else "") or corpus[i] for i in idx]


def head_fit_steps(cfg) -> tuple[int, ...]:
    """The steps at whose start the ridge fit runs (none unless `extensions.head_init` is "ridge"): the
    contrastive phase's first step, if the run has one, and with `head_refit` the last step."""
    if cfg.extensions.head_init != "ridge":
        return ()
    steps = {cfg.objective.ntp_steps} if cfg.objective.ntp_steps < cfg.optim.steps else set()
    if cfg.extensions.head_refit:
        steps.add(cfg.optim.steps - 1)
    return tuple(sorted(steps))


class RidgeHeadFit:
    """A callback of the training loop: fits the readout head to the teacher (ridge) when the
    contrastive phase starts, and with `head_refit` again before the last step."""

    def __init__(self, cfg):
        self.cfg = cfg

    def on_step_start(self, run) -> None:
        cfg = self.cfg
        if run.step not in head_fit_steps(cfg):
            return
        objective = run.accelerator.unwrap_model(run.objective)
        was_training = objective.training
        objective.eval()
        texts = head_init_texts(run.corpus, cfg.extensions.head_init_texts, cfg.run.seed, cfg.extensions.span_views)
        fit_head_to_teacher(objective, run.collator, run.teacher, texts)
        objective.train(was_training)
