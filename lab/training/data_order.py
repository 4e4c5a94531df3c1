"""Which corpus rows a step trains on: a pure function of (seed, step, process).

Step s of a run with global batch G uses the examples s*G .. s*G + G - 1 of a seeded permutation
of the corpus (reshuffled every epoch), split across processes and micro-batches. So `--resume`
continues with exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import random

from .config import TrainConfig


def example_indices(step: int, micro: int, cfg: TrainConfig, n_examples: int, rank: int = 0,
                    world: int = 1) -> list[int]:
    """Corpus indices of micro-batch `micro` of `step` on process `rank` (pure function)."""
    per_step = cfg.optim.batch_size * cfg.optim.grad_accum * world
    out = []
    start = step * per_step + (micro * world + rank) * cfg.optim.batch_size
    for pos in range(start, start + cfg.optim.batch_size):
        epoch, offset = divmod(pos, n_examples)
        out.append(_permutation(cfg.run.seed, epoch, n_examples)[offset])
    return out


_PERM_CACHE: dict = {}


def _permutation(seed: int, epoch: int, n: int) -> list[int]:
    key = (seed, epoch, n)
    if key not in _PERM_CACHE:
        perm = list(range(n))
        random.Random(seed * 7919 + epoch).shuffle(perm)
        _PERM_CACHE.clear()
        _PERM_CACHE[key] = perm
    return _PERM_CACHE[key]


def article_partners(rows: list[dict], seed: int) -> list[tuple[int, int]]:
    """For each row: (index of another row of the same article, article id), drawn with `seed`.
    A row alone in its article is its own partner. Used by `positive: article`."""
    by_title: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_title.setdefault(r.get("title", ""), []).append(i)
    ids = {t: n for n, t in enumerate(by_title)}
    out = []
    for i, r in enumerate(rows):
        same = by_title[r.get("title", "")]
        rng = random.Random(seed * 1_000_003 + i)
        j = same[rng.randrange(len(same))] if len(same) > 1 else i
        while j == i and len(same) > 1:
            j = same[rng.randrange(len(same))]
        out.append((j, ids[r.get("title", "")]))
    return out


def training_example(i: int, corpus: list[str], partners: list[tuple[int, int]] | None) -> dict:
    """What the collator gets for corpus row i: its text and index (and, with article positives,
    the partner row's text and the article id)."""
    if partners is None:
        return {"text": corpus[i], "index": i}
    j, group = partners[i]
    return {"text": corpus[i], "index": i, "positive_text": corpus[j], "group": group}
