"""Training rows and the collator: text -> plain / continuation / reconstruction rows, labels, views.

For each example (a text and its corpus index) the collator draws, from a generator seeded by
(seed, index), whether the row is plain, which mode it uses and where it splits: the same example
always becomes the same row, whatever the batch, worker or resume point.

    plain           BOS x0 x1 x2 x3                    labels: every next token
    reconstruction  BOS x0 x1 x2 x3 | S | x0 x1 x2 x3  labels: all but S (the copy is rebuilt via S)
                    (with `reconstruction_min_tokens`, the text is first cut to a random length,
                    so that short texts are reconstructed too, not only the row budget's length;
                    with `reconstruction_end`, the copy ends with EOS, a target like the rest:
                    the model learns where the text ends, and `reconstruct()` stops there)
    continuation    BOS x0 x1 | S | x2 x3              labels: all but S

Contrastive views (gem-method.md §4): q = `BOS text | S`, d+ = the same with each text token
dropped with probability `drop_rate` (at least one kept); other rows of the batch are negatives.
With `span_views`, a share of the queries is a few words of the text instead (`lab.training.spans`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from ..gem.lm_loss import IGNORE_INDEX
from ..gem.masks import ROLE_NAMES, Role, position_ids_from_roles
from ..gem.tokens import Row, pad_rows, text_ids
from .config import TrainConfig
from .spans import random_span


@dataclass
class RowStats:
    plain: int = 0
    reconstruction: int = 0
    continuation: int = 0
    skipped_short: int = 0
    skipped_empty: int = 0
    truncated: int = 0

    def add(self, other: "RowStats") -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


def example_rng(seed: int, index: int) -> random.Random:
    return random.Random(seed * 1_000_003 + index)


def make_row(ids: list[int], bos: list[int], special_ids: list[int], cfg: TrainConfig, rng: random.Random,
             stats: RowStats, end_id: int | None = None) -> Row | None:
    """One training row from a text's token ids (no BOS), or None if it must be skipped. end_id:
    the token that ends a reconstruction copy (`cfg.rows.reconstruction_end`; the tokenizer's EOS)."""
    if not ids:
        stats.skipped_empty += 1
        return None
    bos_id = bos[0] if bos else None
    plain = rng.random() < cfg.rows.p_plain
    reconstruction = rng.random() < cfg.rows.reconstruction_share
    if plain:
        budget = cfg.rows.max_length - len(bos)
        stats.truncated += len(ids) > budget
        stats.plain += 1
        return Row.build(bos + ids[:budget], [], bos_token_id=bos_id)
    k = len(special_ids)
    if reconstruction:
        end = [end_id] if cfg.rows.reconstruction_end else []
        if cfg.rows.reconstruction_end and end_id is None:
            raise ValueError("rows.reconstruction_end needs a tokenizer with an EOS token")
        budget = (cfg.rows.max_length - len(bos) - k - len(end)) // 2
        stats.truncated += len(ids) > budget
        ids = ids[:budget]
        if cfg.rows.reconstruction_min_tokens and len(ids) > cfg.rows.reconstruction_min_tokens:
            ids = ids[:rng.randint(cfg.rows.reconstruction_min_tokens, len(ids))]
        stats.reconstruction += 1
        return Row.build(bos + ids, special_ids, ids + end, bos_token_id=bos_id)
    budget = cfg.rows.max_length - len(bos) - k
    stats.truncated += len(ids) > budget
    ids = ids[:budget]
    if len(ids) < 2 * cfg.rows.min_part:
        stats.skipped_short += 1
        return None
    i = rng.randint(cfg.rows.min_part, len(ids) - cfg.rows.min_part)
    stats.continuation += 1
    return Row.build(bos + ids[:i], special_ids, ids[i:], bos_token_id=bos_id)


def labels_for(input_ids: torch.Tensor, roles: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) labels aligned with input_ids (the model shifts them). Never targets: padding, S, and
    the first token of every segment (position 0: BOS, or a packed row's first token, which must
    not be predicted from the end of the previous row)."""
    keep = (roles != Role.PAD) & (roles != Role.SPECIAL) & (position_ids != 0)
    return torch.where(keep, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def describe_row(batch: dict, tokenizer, b: int = 0) -> list[dict]:
    """One dict per real token of row `b` of a collated batch: its text, role, position id and
    whether it is an NTP target ("yes" / "–"), for tables in notebooks and docs."""
    roles = batch["roles"][b]
    keep = roles != Role.PAD
    return [{"token": tokenizer.decode([int(t)]), "role": ROLE_NAMES[int(r)], "position": int(p),
             "NTP target?": "yes" if int(label) != IGNORE_INDEX else "–"}
            for t, r, p, label in zip(batch["input_ids"][b][keep], roles[keep], batch["position_ids"][b][keep],
                                      batch["labels"][b][keep])]


def pack_rows(rows: list[Row], max_length: int) -> tuple[list[Row], list[list[int]], list[tuple[int, int]]]:
    """First-fit-decreasing packing of rows into sequences of at most max_length tokens.

    Returns the packed rows; for each, the segment id of every token (0, 1, ... per row); and for
    each input row, where it went: (packed sequence, offset of its first token).
    """
    bins: list[tuple[Row, list[int]]] = []
    where: list[tuple[int, int]] = [(0, 0)] * len(rows)
    for i in sorted(range(len(rows)), key=lambda i: -len(rows[i].input_ids)):
        row = rows[i]
        for b, (packed, segs) in enumerate(bins):
            if len(packed.input_ids) + len(row.input_ids) <= max_length:
                where[i] = (b, len(packed.input_ids))
                segs += [segs[-1] + 1] * len(row.input_ids)
                packed.input_ids += row.input_ids
                packed.roles += row.roles
                break
        else:
            where[i] = (len(bins), 0)
            bins.append((Row(list(row.input_ids), list(row.roles)), [0] * len(row.input_ids)))
    return [b[0] for b in bins], [b[1] for b in bins], where


def segment_tensor(segs: list[list[int]]) -> torch.Tensor:
    """(B, T) long segment ids of packed rows, -1 on the right padding."""
    out = torch.full((len(segs), max(len(s) for s in segs)), -1, dtype=torch.long)
    for b, sg in enumerate(segs):
        out[b, :len(sg)] = torch.tensor(sg)
    return out


def s_index(rows: list[Row], where: list[tuple[int, int]], T: int, k: int) -> torch.Tensor:
    """(n, k) long: for each of the n rows that hold S (in input order), the flat indices into the
    (B * T) positions of the padded batch of its k S tokens; `where` says where each row went
    ((sequence, offset of its first token), `pack_rows`)."""
    index = [[b * T + off + j for j, r in enumerate(row.roles) if r == Role.SPECIAL]
             for row, (b, off) in zip(rows, where)]
    return torch.tensor([i for i in index if i], dtype=torch.long).reshape(-1, k)


def view_batch(rows: list[Row], pad_token_id: int, pack_to: int | None = None) -> dict[str, torch.Tensor]:
    """A contrastive view batch: rows `text | S_1..S_k`, one embedding each, in input order.

    Returns `input_ids`, `roles` (B, T) and `s_index` (N, k): for row i, the flat indices (into
    B * T) of its S tokens. With `pack_to`, rows are packed into sequences of that many tokens
    (with `segment_ids`: segments never see each other), so far fewer padded
    positions run through the model; the embeddings are the same (tested).
    """
    if pack_to is None:
        packed, where, segment_ids = rows, [(i, 0) for i in range(len(rows))], None
    else:
        packed, segs, where = pack_rows(rows, pack_to)
        segment_ids = segment_tensor(segs)
    batch = pad_rows(packed, pad_token_id)
    k = sum(r == Role.SPECIAL for r in rows[0].roles)
    batch["s_index"] = s_index(rows, where, batch["input_ids"].shape[1], k)
    if segment_ids is not None:
        batch["segment_ids"] = segment_ids
    return batch


def drop_tokens(ids: list[int], rate: float, rng: random.Random) -> list[int]:
    kept = [t for t in ids if rng.random() >= rate]
    return kept or [ids[rng.randrange(len(ids))]]


@dataclass
class GemCollator:
    """Turns examples {"text": str, "index": int[, "positive_text": str, "group": int]} into a batch.

    Returns (B, T) tensors only - `input_ids`, `roles`, `position_ids`, `labels` and, with
    `cfg.rows.pack`, `segment_ids` (B then counts packed sequences: several rows per sequence, each
    its own segment, positions restarting at 0); the mask is built from the roles where the model
    runs (`lab.gem.forward.gem_inputs`). `s_index` (n, k) locates each row's S. With `contrastive`,
    also the `query` / `positive` view batches (each `input_ids`, `roles`, `s_index`, S at the end
    of each row) and their decoded texts `query_texts` / `positive_texts` (what a teacher reads);
    plus `stats` (a RowStats of this batch). `pack_views` packs the views too (same embeddings,
    fewer padded positions; False: the reference layout).
    """

    tokenizer: object
    special_ids: list[int]
    bos: list[int]
    cfg: TrainConfig
    pack_views: bool = True
    stats: RowStats = field(default_factory=RowStats)

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (`lab.gem.tokens.text_ids`); a blank text becomes [] (skipped)."""
        keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        out: list[list[int]] = [[] for _ in texts]
        for i, ids in zip(keep, text_ids(self.tokenizer, [texts[i] for i in keep])[0] if keep else []):
            out[i] = ids
        return out

    @property
    def view_budget(self) -> int:
        """Text tokens one view (or training row) may hold: max_length minus BOS and the k S tokens."""
        return self.cfg.rows.max_length - len(self.bos) - len(self.special_ids)

    def _view_row(self, ids: list[int]) -> Row:
        """`BOS text | S` for text ids already cut to `view_budget` (the cut ids are also what the
        teacher's text is decoded from, so the cut happens once, in the caller)."""
        if len(ids) > self.view_budget:
            raise ValueError(f"a view holds at most {self.view_budget} text tokens, got {len(ids)}: cut the ids first")
        return Row.build(self.bos + ids, self.special_ids, bos_token_id=self.bos[0] if self.bos else None)

    def views_of(self, texts: list[str]) -> tuple[dict, list[str]]:
        """(a view batch of `texts`, each `BOS text | S` cut as the training views are; the texts
        as cut, decoded: what a teacher embeds)."""
        ids = [i[:self.view_budget] for i in self._ids(texts) if i]
        pack_to = self.cfg.rows.max_length if self.pack_views else None
        return view_batch([self._view_row(i) for i in ids], self.pad_token_id, pack_to), [self.tokenizer.decode(i) for i in ids]

    def _query_ids(self, kept: list[tuple[dict, list[int], random.Random]]) -> list[list[int]]:
        """The query view's text ids of each kept example: the text itself, or (with probability
        `cfg.extensions.span_views`, drawn from the example's rng) a few words of it (`lab.training.spans`)."""
        if self.cfg.extensions.span_views <= 0:
            return [ids for _, ids, _ in kept]
        spans = {j: random_span(e["text"], rng) for j, (e, _, rng) in enumerate(kept)
                 if rng.random() < self.cfg.extensions.span_views}
        spans = {j: t for j, t in spans.items() if t}
        span_ids = dict(zip(spans, self._ids(list(spans.values()))))
        return [span_ids.get(j) or ids for j, (_, ids, _) in enumerate(kept)]

    def __call__(self, examples: list[dict], contrastive: bool = True) -> dict:
        stats = RowStats()
        all_ids = self._ids([e["text"] for e in examples])
        budget = self.view_budget
        rows, kept = [], []  # kept: (example, text ids, its rng after the row was drawn)
        for e, ids in zip(examples, all_ids):
            rng = example_rng(self.cfg.run.seed, int(e["index"]))
            row = make_row(ids, self.bos, self.special_ids, self.cfg, rng, stats, self.tokenizer.eos_token_id)
            if row is not None:
                rows.append(row)
                kept.append((e, ids, rng))
        views_q, views_d, groups, texts_q, texts_d = [], [], None, [], []
        if contrastive and kept:
            has_partner = "positive_text" in kept[0][0]
            others = self._ids([e["positive_text"] for e, _, _ in kept]) if has_partner else [ids for _, ids, _ in kept]
            groups = [int(e["group"]) for e, _, _ in kept] if has_partner else None
            dropped = [drop_tokens(other[:budget], self.cfg.objective.drop_rate, rng) for (_, _, rng), other in zip(kept, others)]
            query = [ids[:budget] for ids in self._query_ids(kept)]
            views_q, views_d = [self._view_row(i) for i in query], [self._view_row(i) for i in dropped]
            texts_q, texts_d = [self.tokenizer.decode(i) for i in query], [self.tokenizer.decode(i) for i in dropped]
        self.stats.add(stats)
        if not rows:
            return {"empty": True, "stats": stats}
        pad = self.pad_token_id
        segment_ids, unpacked, where = None, rows, [(i, 0) for i in range(len(rows))]
        if self.cfg.rows.pack:
            rows, segs, where = pack_rows(rows, self.cfg.rows.max_length)
            segment_ids = segment_tensor(segs)
        batch = pad_rows(rows, pad)
        batch["s_index"] = s_index(unpacked, where, batch["input_ids"].shape[1], len(self.special_ids))
        batch["position_ids"] = position_ids_from_roles(batch["roles"], segment_ids)
        if segment_ids is not None:
            batch["segment_ids"] = segment_ids
        batch["labels"] = labels_for(batch["input_ids"], batch["roles"], batch["position_ids"])
        if contrastive:
            pack_to = self.cfg.rows.max_length if self.pack_views else None
            batch["query"] = view_batch(views_q, pad, pack_to)
            batch["positive"] = view_batch(views_d, pad, pack_to)
            if groups is not None:
                batch["groups"] = torch.tensor(groups, dtype=torch.long)
            batch["query_texts"], batch["positive_texts"] = texts_q, texts_d
        batch["stats"] = stats
        return batch
