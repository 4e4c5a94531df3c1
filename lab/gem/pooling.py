"""Readouts: how a batch of texts becomes rows, and how hidden states become one vector per text.

    gem        text | S_1..S_k  -> last-layer state at S (mean over k, or concatenated)
    mean       text             -> mean of the text's token states (BOS excluded: it is an
                                   attention sink whose state carries no content)
    last       text             -> state of the last token
    prompteol  This sentence : "text" means in one word:"  -> last token (Jiang et al. 2023)
    echo       Rewrite the sentence: text\nRewritten sentence: text -> mean over the 2nd copy
               (Springer et al. 2024)

Each readout is a `RowPlan`: the token rows to run, and a (B, T) bool telling which positions
to pool. The same plans serve `encode`, evaluation and the app, so every baseline is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masks import Role
from .tokens import Row, pad_rows

POOLINGS = ("gem", "mean", "last", "prompteol", "echo")
PROMPTEOL = ('This sentence : "', '" means in one word:"')
ECHO = ("Rewrite the sentence: ", "\nRewritten sentence: ")


@dataclass
class RowPlan:
    row: Row
    pool: list[bool]  # which positions of row.input_ids are pooled


def _plain(ids: list[int]) -> list[int]:
    return [int(Role.PREFIX)] * len(ids)


def plan_row(pooling: str, text_ids: list[int], bos: list[int], special_ids: list[int],
             piece_ids: dict[str, list[int]]) -> RowPlan:
    """The row and pooled positions of one text for a readout.

    text_ids: the text's tokens without BOS (already truncated); bos: [bos_id] or [].
    piece_ids: token ids of the fixed template pieces (see `template_piece_ids`).
    """
    if pooling == "gem":
        row = Row.build(bos + text_ids, special_ids, bos_token_id=bos[0] if bos else None)
        pool = [r == Role.SPECIAL for r in row.roles]
    elif pooling in ("mean", "last"):
        row = Row.build(bos + text_ids, [], bos_token_id=bos[0] if bos else None)
        n = len(row.input_ids)
        if pooling == "mean":
            pool = [r == Role.PREFIX for r in row.roles]
        else:
            pool = [i == n - 1 for i in range(n)]
    elif pooling == "prompteol":
        ids = bos + piece_ids["prompteol_pre"] + text_ids + piece_ids["prompteol_post"]
        row = Row(ids, _plain(ids))
        pool = [i == len(ids) - 1 for i in range(len(ids))]
    elif pooling == "echo":
        first = bos + piece_ids["echo_pre"] + text_ids + piece_ids["echo_mid"]
        ids = first + text_ids
        row = Row(ids, _plain(ids))
        pool = [i >= len(first) for i in range(len(ids))]
    else:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    if bos:
        row.roles[0] = int(Role.BOS)
    return RowPlan(row, pool)


def template_piece_ids(tokenizer) -> dict[str, list[int]]:
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return {
        "prompteol_pre": enc(PROMPTEOL[0]), "prompteol_post": enc(PROMPTEOL[1]),
        "echo_pre": enc(ECHO[0]), "echo_mid": enc(ECHO[1]),
    }


def template_overhead(pooling: str, piece_ids: dict[str, list[int]], k: int) -> tuple[int, int]:
    """(fixed extra tokens, copies of the text) a readout adds, to fit texts within max_length."""
    if pooling == "gem":
        return k, 1
    if pooling == "prompteol":
        return len(piece_ids["prompteol_pre"]) + len(piece_ids["prompteol_post"]), 1
    if pooling == "echo":
        return len(piece_ids["echo_pre"]) + len(piece_ids["echo_mid"]), 2
    return 0, 1


def collate_plans(plans: list[RowPlan], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """input_ids, roles and pool (all (B, T)) for a list of row plans, padded alike."""
    batch = pad_rows([p.row for p in plans], pad_token_id, padding_side)
    T = batch["input_ids"].shape[1]
    pool = torch.zeros(len(plans), T, dtype=torch.bool)
    for b, p in enumerate(plans):
        n = len(p.pool)
        sl = slice(0, n) if padding_side == "right" else slice(T - n, T)
        pool[b, sl] = torch.tensor(p.pool)
    batch["pool"] = pool
    return batch


def pool_states(hidden: torch.Tensor, pool: torch.Tensor, readout: str = "mean") -> torch.Tensor:
    """One vector per row from last-layer states.

    hidden: (B, T, d); pool: (B, T) bool, at least one True per row.
    readout "mean": (B, d) mean of the pooled states. "concat": (B, n*d), the n pooled states in
    order (every row must pool the same number n of positions, as with k GEM tokens).
    """
    h = hidden.float()
    if readout == "concat":
        n = int(pool[0].sum())
        if not bool((pool.sum(-1) == n).all()):
            raise ValueError("concat readout needs the same number of pooled positions in every row")
        return h[pool].reshape(h.shape[0], n * h.shape[-1])
    w = pool.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(1) / w.sum(1).clamp(min=1.0)


def pooled_at(hidden: torch.Tensor, s_index: torch.Tensor) -> torch.Tensor:
    """(N, d) float32: the mean of hidden (B, T, d) over each row's S positions, s_index (N, k)
    flat indices into B * T (e.g. `lab.training.collate.s_index`: every row's S in a packed batch)."""
    flat = hidden.reshape(-1, hidden.shape[-1])  # (B * T, d)
    return flat[s_index].float().mean(1)  # (N, k, d) -> (N, d)
