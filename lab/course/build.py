"""Checks for the exercises where a learner builds a piece of GEM: the mask, the NTP labels, InfoNCE,
and a patched S cache. Each compares the learner's code with the lab's own on many inputs and names
the first place they differ (never the expected answer in full).

    from lab.course import exercises as ex
    ex.check_gem_mask(my_gem_mask)          # against lab.gem.masks.gem_mask on 300 random role rows
"""

from __future__ import annotations

import random

import torch

from ..gem.lm_loss import IGNORE_INDEX
from ..gem.masks import ROLE_NAMES, Role, gem_mask
from .verdict import answered, verdict


def random_role_rows(n_rows: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(roles, segment_ids), each (n_rows, T): rows of 1-3 packed segments, each `[BOS] prefix S*k
    [suffix]` with k 1-5 (BOS standing also for a sink token), padded on the left or the right."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        roles, segs = [], []
        for s in range(rng.choice((1, 1, 2, 3))):
            seg = ([Role.BOS] if rng.random() < 0.6 else []) + [Role.PREFIX] * rng.randint(1, 5)
            seg += [Role.SPECIAL] * rng.randint(1, 5) + [Role.SUFFIX] * rng.choice((0, 1, 2, 4))
            roles += seg
            segs += [s] * len(seg)
        rows.append((roles, segs, rng.randint(0, 3), rng.random() < 0.5))
    T = max(len(r) + pad for r, _, pad, _ in rows)
    out_roles = torch.full((n_rows, T), int(Role.PAD))
    out_segs = torch.full((n_rows, T), -1)
    for b, (roles, segs, _, left) in enumerate(rows):
        at = T - len(roles) if left else 0
        out_roles[b, at:at + len(roles)] = torch.tensor([int(r) for r in roles])
        out_segs[b, at:at + len(roles)] = torch.tensor(segs)
    return out_roles, out_segs


def _runs(roles: torch.Tensor) -> str:
    """'pad×3 bos prefix×4 special suffix×2': a row of roles, run-length written."""
    names = [ROLE_NAMES[int(r)] for r in roles]
    out, i = [], 0
    while i < len(names):
        j = i
        while j < len(names) and names[j] == names[i]:
            j += 1
        out.append(names[i] + (f"×{j - i}" if j - i > 1 else ""))
        i = j
    return " ".join(out)


def _first_difference(yours: torch.Tensor, truth: torch.Tensor, roles: torch.Tensor, segs: torch.Tensor) -> str | None:
    """'row b: QUERY i -> KEY j: ...' for the first cell (of a non-padding query) where they differ."""
    query_counts = (roles != Role.PAD)[:, :, None].expand_as(truth)
    diff = (yours != truth) & query_counts
    if not diff.any():
        return None
    b, i, j = (int(x) for x in diff.nonzero()[0])
    name = lambda t: ROLE_NAMES[int(roles[b, t])]  # noqa: E731
    return (f"row {b} ({_runs(roles[b])}): query {i} ({name(i)}) -> key {j} "
            f"({name(j)}), segments {int(segs[b, i])} and {int(segs[b, j])}, is {bool(yours[b, i, j])} in yours, {bool(truth[b, i, j])} in GEM's rule; "
            f"{int(diff.sum())} cells differ in all")


def check_gem_mask(fn, n_rows: int = 300) -> bool:
    """Your `fn(roles, segment_ids, suffix_sees_bos) -> (B, 1, T, T) bool` against `gem_mask` on
    `n_rows` random rows (k 1-5, a BOS or sink in front or not, packed segments, left and right
    padding), with and without the suffix seeing BOS (what a sink needs). Padding queries are not
    compared (any row that keeps them from being empty will do)."""
    if not answered(fn):
        return False
    roles, segs = random_role_rows(n_rows)
    for sees_bos in (False, True):
        yours = fn(roles, segs, sees_bos)
        if yours is None:
            print("… your turn: make my_gem_mask return the (B, 1, T, T) mask")
            return False
        if tuple(yours.shape) != (roles.shape[0], 1, roles.shape[1], roles.shape[1]):
            return verdict(False, "", f"return shape (B, 1, T, T) = {(roles.shape[0], 1, roles.shape[1], roles.shape[1])}, "
                            f"not {tuple(yours.shape)}")
        where = _first_difference(yours[:, 0].bool(), gem_mask(roles, segs, sees_bos)[:, 0], roles, segs)
        if where:
            return verdict(False, "", f"with suffix_sees_bos={sees_bos}, {where}")
    return verdict(True, f"your mask equals gem_mask on {n_rows} random rows (k 1-5, sinks, packing, padding) "
                    "both with and without the suffix seeing BOS", "")


def check_labels(fn, batches: list[dict]) -> bool:
    """Your `fn(input_ids, roles, position_ids) -> labels` (B, T) against the collator's labels
    (aligned with input_ids, IGNORE_INDEX = -100 where there is no target) on collated batches."""
    if not answered(fn):
        return False
    for n, batch in enumerate(batches):
        yours = fn(batch["input_ids"], batch["roles"], batch["position_ids"])
        if yours is None:
            print("… your turn: make my_labels return the (B, T) labels")
            return False
        diff = (torch.as_tensor(yours) != batch["labels"]).nonzero()
        if len(diff):
            b, t = (int(x) for x in diff[0])
            role = ROLE_NAMES[int(batch["roles"][b, t])]
            return verdict(False, "", f"batch {n}, row {b}, position {t} ({role}, position id "
                            f"{int(batch['position_ids'][b, t])}): yours {int(yours[b, t])}, the collator's "
                            f"{int(batch['labels'][b, t])} ({len(diff)} positions differ)")
    targets = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
    return verdict(True, f"your labels equal the collator's on {len(batches)} batches ({targets} targets)", "")


def check_info_nce(fn, sim: torch.Tensor, scale: float = 20.0) -> bool:
    """Your `fn(sim, scale) -> loss` (InfoNCE from an (N, N) cosine matrix whose diagonal holds the
    positives) against `lab.training.losses.info_nce` on the notebook's matrix and on random ones."""
    from ..training.losses import info_nce

    if not answered(fn, sim):
        return False
    gen = torch.Generator().manual_seed(0)
    cases = [(torch.as_tensor(sim, dtype=torch.float32), None, None)]
    for n in (2, 5, 16):
        q, d = torch.randn(n, 8, generator=gen), torch.randn(n, 8, generator=gen)
        qn, dn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(d, dim=-1)
        cases.append((qn @ dn.T, q, d))
    for i, (s, q, d) in enumerate(cases):
        yours = fn(s, scale)
        if yours is None:
            print("… your turn: make my_info_nce return the loss")
            return False
        truth = info_nce(q, d, torch.tensor(scale)) if q is not None else \
            torch.nn.functional.cross_entropy(scale * s, torch.arange(len(s)))
        if abs(float(yours) - float(truth)) > 1e-4:
            what = "the notebook's matrix" if q is None else f"a random {len(s)} x {len(s)} matrix"
            return verdict(False, "", f"on {what}: yours {float(yours):.4f}, the lab's {float(truth):.4f}; "
                            "a row's positive is its diagonal entry, every other column a negative")
    return verdict(True, f"your InfoNCE equals the lab's ({float(fn(cases[0][0], scale)):.4f} on this matrix)", "")


@torch.inference_mode()
def check_readout(fn, gem, texts: list[str]) -> bool:
    """4.1 — your `fn(text) -> (d,) embedding`, built from the model's last-layer states, against
    `gem.encode(text)` (the lab's readout: the GEM tokens' states, pooled, through the head, unit length)."""
    if not answered(fn):
        return False
    for text in texts:
        yours = fn(text)
        if yours is None:
            print("… your turn: make my_readout return the embedding")
            return False
        yours = torch.as_tensor(yours, dtype=torch.float32).flatten().cpu()
        truth = torch.as_tensor(gem.encode(text))
        if yours.shape != truth.shape:
            return verdict(False, "", f"yours has {yours.numel()} numbers, the GEM embedding {truth.numel()}: "
                            "the readout head maps the pooled state to its own width (gem.readout_head)"
                            if gem.readout_head is not None else f"the embedding has {truth.numel()} numbers")
        cos = float(torch.nn.functional.cosine_similarity(yours, truth, dim=0))
        length = float(yours.norm())
        if cos < 0.9999 or abs(length - 1) > 1e-3:
            return verdict(False, "", f"on {text[:40]!r}: cosine with gem.encode {cos:.4f}, length {length:.3f} "
                            "(want 1.0000 and 1): which rows of `states` does GEM read, and how does it pool them?")
    return verdict(True, f"your readout equals gem.encode on {len(texts)} texts", "")


def check_neighbour_agreement(fn, embeddings: dict, labels: list) -> bool:
    """4.2 — your `fn(emb, labels, k) -> float` against `lab.evaluation.quick.neighbour_agreement`
    on each of `embeddings` ({name: (n, d) unit rows}) at k = 1, 5 and 10."""
    from ..evaluation.quick import neighbour_agreement

    if not answered(fn):
        return False
    for name, emb in embeddings.items():
        for k in (1, 5, 10):
            yours, truth = fn(emb, labels, k), neighbour_agreement(emb, labels, k)
            if yours is None:
                print("… your turn: make my_agreement return a number")
                return False
            if abs(float(yours) - truth) > 1e-6:
                return verdict(False, "", f"{name}, k={k}: yours {float(yours):.4f}, the lab's {truth:.4f} "
                                "(is a text its own nearest neighbour?)")
    return verdict(True, f"your measure equals the lab's on {', '.join(embeddings)} at k = 1, 5, 10", "")


def patched_continuation(gem, text_a: str, suffix_b: str, max_new_tokens: int = 12) -> str:
    """Text B's suffix continued greedily from text A's S cache (the lab's own answer to 6.4)."""
    cache, pos, _ = gem.special_cache(text_a)
    ids = gem.text_ids(suffix_b)
    logits = gem.continue_from_cache(cache, ids, pos)[-1]
    return gem.tokenizer.decode(gem.greedy_from_cache(cache, pos + len(ids), logits, max_new_tokens))


def check_patch_s(gem, text_a: str, suffix_b: str, yours: str, max_new_tokens: int = 12, key: str = "6.1") -> bool:
    """6.1 — your continuation of `suffix_b` from `text_a`'s S cache, after a prediction recorded with
    `course.predict(key, ...)`."""
    from .predictions import predictions

    if not answered(yours):
        return False
    said = predictions().get(key)
    if not said:
        return verdict(False, "", f"record your prediction first: course.predict({key!r}, \"...\")")
    truth = patched_continuation(gem, text_a, suffix_b, max_new_tokens)
    return verdict(yours == truth, f"continued from A's S: {suffix_b!r} → {truth!r} (you predicted: {said['answer']!r})",
                    "take cache, pos, _ = gem.special_cache(text_a); feed suffix_b's ids with "
                    "gem.continue_from_cache(cache, ids, pos); then gem.greedy_from_cache(cache, pos + len(ids), "
                    "logits[-1], max_new_tokens) and decode")


__all__ = ["check_gem_mask", "check_info_nce", "check_labels", "check_neighbour_agreement", "check_patch_s",
           "check_readout", "patched_continuation",
           "random_role_rows"]
