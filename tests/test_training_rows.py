"""Collator invariants per row mode, loss values on hand-made cases, and the schedules."""

import math
import random

import pytest
import torch

from tests.conftest import flat_config
from lab.gem.lm_loss import IGNORE_INDEX as IGNORE
from lab.gem.masks import Role, gem_mask
from lab.gem.tokens import text_ids
from lab.training.collate import GemCollator
from lab.training.losses import LogitScale, alpha_at, info_nce, lr_at, ntp_loss
from lab.training.spans import SPAN_WORDS, random_span, span_words

from .conftest import tiny_gem

TEXTS = ["the first training text", "second one here, a bit longer than the first", "third",
         "fourth text about cats", "fifth about stocks and bonds"]


def collate(cfg, texts=TEXTS, k=1, contrastive=True):
    gem = tiny_gem("llama", k=k)
    col = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)
    return gem, col([{"text": t, "index": i} for i, t in enumerate(texts)], contrastive=contrastive)


@pytest.mark.parametrize("mode", ["plain", "reconstruction", "continuation"])
def test_rows_per_mode(mode):
    cfg = flat_config(p_plain=1.0 if mode == "plain" else 0.0,
                      reconstruction_share=1.0 if mode == "reconstruction" else 0.0, k=2, batch_size=4,
                      pack=False)
    gem, b = collate(cfg, k=2)
    ids, roles, labels = b["input_ids"], b["roles"], b["labels"]
    assert getattr(b["stats"], mode) == len(TEXTS) - b["stats"].skipped_short
    assert set(b) >= {"input_ids", "roles", "position_ids", "labels"} and "attention_mask" not in b, \
        "a batch carries (B, T) tensors; the mask is built where the model runs"
    assert (labels[roles == Role.SPECIAL] == IGNORE).all(), "S is never a target"
    assert (labels[roles == Role.PAD] == IGNORE).all()
    assert (labels[b["position_ids"] == 0] == IGNORE).all(), "a segment's first token is never a target"
    real = (roles != Role.PAD) & (roles != Role.SPECIAL) & (b["position_ids"] != 0)
    assert torch.equal(labels[real], ids[real]), "every other token is a target"
    for r in range(ids.shape[0]):
        n_special = int((roles[r] == Role.SPECIAL).sum())
        if mode == "plain":
            assert n_special == 0
            continue
        assert n_special == 2 and ids[r][roles[r] == Role.SPECIAL].tolist() == gem.special_ids
        prefix = ids[r][(roles[r] == Role.PREFIX)].tolist()
        suffix = ids[r][(roles[r] == Role.SUFFIX)].tolist()
        if mode == "reconstruction":
            assert prefix == suffix, "x | S | x"
        else:
            text = gem.tokenizer(TEXTS[r] if b["stats"].skipped_short == 0 else "", add_special_tokens=False)["input_ids"]
            assert prefix + suffix == text[: len(prefix) + len(suffix)]
            assert len(prefix) >= cfg.rows.min_part and len(suffix) >= cfg.rows.min_part


# Two reconstruction rows, "ab" and "cd", packed into one sequence, drawn by hand: each segment is
# `BOS x0 x1 | S | x0 x1`; segments never see each other; the suffix sees S and itself, not the prefix.
PACKED_MASK = """
      <s> a  b  S  a  b  <s> c  d  S  c  d
<s>   ■   .  .  .  .  .  .   .  .  .  .  .
a     ■   ■  .  .  .  .  .   .  .  .  .  .
b     ■   ■  ■  .  .  .  .   .  .  .  .  .
S     ■   ■  ■  ■  .  .  .   .  .  .  .  .
a     .   .  .  ■  ■  .  .   .  .  .  .  .
b     .   .  .  ■  ■  ■  .   .  .  .  .  .
<s>   .   .  .  .  .  .  ■   .  .  .  .  .
c     .   .  .  .  .  .  ■   ■  .  .  .  .
d     .   .  .  .  .  .  ■   ■  ■  .  .  .
S     .   .  .  .  .  .  ■   ■  ■  ■  .  .
c     .   .  .  .  .  .  .   .  .  ■  ■  .
d     .   .  .  .  .  .  .   .  .  ■  ■  ■
"""


def _drawn(grid: str) -> torch.Tensor:
    rows = [line.split()[1:] for line in grid.strip().splitlines()[1:]]
    return torch.tensor([[c == "■" for c in r] for r in rows])


def test_packed_reconstruction_rows_get_the_hand_drawn_mask():
    cfg = flat_config(p_plain=0.0, reconstruction_share=1.0, k=1, batch_size=2, max_length=64, pack=True)
    gem, b = collate(cfg, texts=["ab", "cd"], contrastive=False)
    assert b["input_ids"].shape == (1, 12), "both rows fit one packed sequence"
    S, bos = gem.special_ids[0], gem.bos[0]
    a, bb, c, d = (gem.text_ids(ch)[0] for ch in "abcd")
    assert b["input_ids"][0].tolist() == [bos, a, bb, S, a, bb, bos, c, d, S, c, d]
    assert torch.equal(gem_mask(b["roles"], b["segment_ids"])[0, 0], _drawn(PACKED_MASK))
    assert b["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5] * 2
    ignore = IGNORE
    assert b["labels"][0].tolist() == [ignore, a, bb, ignore, a, bb] + [ignore, c, d, ignore, c, d]


def test_short_rows_are_skipped_and_counted_never_crash():
    cfg = flat_config(p_plain=0.0, reconstruction_share=0.0, min_part=4, batch_size=4, pack=False)
    gem, b = collate(cfg, texts=["ab", "a much longer text that can be split", "xyz"])
    assert b["stats"].skipped_short == 2 and b["input_ids"].shape[0] == 1
    _, empty = collate(cfg, texts=["ab"])
    assert empty["empty"] and empty["stats"].skipped_short == 1


def test_same_index_same_row_whatever_the_batch():
    cfg = flat_config(p_plain=0.5, reconstruction_share=0.5, batch_size=4, pack=False)
    gem = tiny_gem("llama")
    col = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)
    a = col([{"text": TEXTS[1], "index": 7}, {"text": TEXTS[0], "index": 3}])
    b = col([{"text": TEXTS[1], "index": 7}])
    n = int((b["roles"][0] != Role.PAD).sum())
    assert a["input_ids"][0, :n].tolist() == b["input_ids"][0, :n].tolist()
    assert a["positive"]["input_ids"][0].tolist()[:5] == b["positive"]["input_ids"][0].tolist()[:5]


def test_contrastive_views_end_in_s_and_drop_tokens():
    cfg = flat_config(drop_rate=0.5, batch_size=4)
    gem, b = collate(cfg)
    for view in ("query", "positive"):
        roles = b[view]["roles"]
        last = (roles != Role.PAD).sum(-1) - 1
        assert (roles[torch.arange(len(last)), last] == Role.SPECIAL).all()
    assert (b["positive"]["roles"] == Role.PREFIX).sum() < (b["query"]["roles"] == Role.PREFIX).sum()


def test_ntp_loss_hand_made():
    logits = torch.full((1, 3, 4), -1e4)
    logits[0, 0, 2] = 0  # position 0 predicts token 2 with certainty
    logits[0, 1, :] = 0  # position 1: uniform over 4
    labels = torch.tensor([[IGNORE, 2, 1]])
    assert math.isclose(ntp_loss(logits, labels).item(), math.log(4) / 2, rel_tol=1e-5)
    labels = torch.tensor([[IGNORE, 2, IGNORE]])
    assert ntp_loss(logits, labels).item() < 1e-4


def test_info_nce_hand_made():
    q = torch.eye(3)
    assert info_nce(q, q, torch.tensor(100.0)).item() < 1e-4  # perfect, well separated
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))  # cos 1 with itself, 0 with the two others
    assert math.isclose(info_nce(q, q, torch.tensor(2.0)).item(), expected, rel_tol=1e-5)
    assert math.isclose(info_nce(torch.ones(4, 2), torch.ones(4, 2), torch.tensor(20.0)).item(), math.log(4), rel_tol=1e-5)


def test_info_nce_same_group_rows_are_not_negatives():
    q = torch.eye(3)
    groups = torch.tensor([5, 5, 9])
    # q0's candidates: its positive d0 and d2 (d1 shares its group and is left out); likewise q1
    two = -math.log(math.exp(2) / (math.exp(2) + 1))
    three = -math.log(math.exp(2) / (math.exp(2) + 2))
    expected = (two + two + three) / 3
    got = info_nce(q, q, torch.tensor(2.0), groups_q=groups, groups_d=groups).item()
    assert math.isclose(got, expected, rel_tol=1e-5)


def test_article_positives_come_from_another_row_of_the_article():
    from lab.training.data_order import article_partners, training_example

    rows = [{"text": t, "title": title} for t, title in zip(TEXTS, ["a", "a", "b", "b", "c"])]
    partners = article_partners(rows, seed=0)
    assert [g for _, g in partners] == [0, 0, 1, 1, 2]
    assert [j for j, _ in partners] == [1, 0, 3, 2, 4], "the other row of the article; alone: itself"
    assert article_partners(rows, seed=0) == partners, "deterministic"
    cfg = flat_config(drop_rate=0.0, batch_size=4, positive="article")
    gem = tiny_gem("llama")
    col = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg, pack_views=False)  # one view per row
    b = col([training_example(i, TEXTS, partners) for i in range(5)])
    assert b["groups"].tolist() == [0, 0, 1, 1, 2]
    n_text = int((b["positive"]["roles"][0] == Role.PREFIX).sum())
    assert n_text == len(gem.text_ids(TEXTS[1])), "row 0's positive is row 1's text (no dropout)"


def test_logit_scale_init_and_clamp():
    s = LogitScale(20.0, 100.0)
    assert math.isclose(s().item(), 20.0, rel_tol=1e-6)
    with torch.no_grad():
        s.log_scale.fill_(10.0)
    assert math.isclose(s().item(), 100.0, rel_tol=1e-6)
    with torch.no_grad():
        s.log_scale.fill_(-3.0)
    assert math.isclose(s().item(), 1.0, rel_tol=1e-6)


def test_schedules():
    cfg = flat_config(steps=1000, ntp_steps=100, warmup_steps=10, lr_ntp=1e-4, lr_cl=1e-5, min_lr_ratio=0.1)
    assert alpha_at(0, cfg) == 0.0 and alpha_at(99, cfg) == 0.0 and alpha_at(100, cfg) == 1.0
    assert alpha_at(100, flat_config(steps=1000, ntp_steps=100, alpha_cl=0.5)) == 0.5
    assert math.isclose(lr_at(0, cfg), 1e-5) and math.isclose(lr_at(9, cfg), 1e-4)
    assert math.isclose(lr_at(10, cfg), 1e-4)
    assert math.isclose(lr_at(100, cfg), 1e-5) and math.isclose(lr_at(1000, cfg), 1e-6)
    lrs = [lr_at(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "cosine decays monotonically"


def test_config_validation():
    with pytest.raises(ValueError, match="p_plain"):
        flat_config(p_plain=1.5)
    with pytest.raises(ValueError, match="in-batch negatives"):
        flat_config(batch_size=1)


def test_packed_batch_has_the_same_loss_as_unpacked(arch):
    """Packing only removes padding: same targets, same NTP sum, fewer positions."""
    from lab.gem.forward import gem_inputs
    from lab.training.losses import ntp_loss_sum

    texts = TEXTS * 3
    gem = tiny_gem(arch, k=1)
    results = {}
    for pack in (False, True):
        cfg = flat_config(p_plain=0.5, reconstruction_share=0.5, batch_size=4, max_length=128, pack=pack)
        col = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)
        b = col([{"text": t, "index": i} for i, t in enumerate(texts)], contrastive=False)
        with torch.no_grad():
            logits = gem.model(**gem_inputs(gem.model, b["input_ids"], b["roles"], b.get("segment_ids"))).logits
        results[pack] = (*ntp_loss_sum(logits, b["labels"]), b["input_ids"].numel())
    (s0, c0, n0), (s1, c1, n1) = results[False], results[True]
    assert int(c0) == int(c1)
    assert float(s1) == pytest.approx(float(s0), rel=1e-4)
    assert n1 < n0 * 0.75, "packing removes padding"


def test_random_span_is_a_few_consecutive_words_of_the_text():
    text = "The '''Eiffel Tower''' was completed in 1889, for the World's Fair."
    words = span_words(text)
    assert words == ["The", "Eiffel", "Tower", "was", "completed", "in", "1889", "for", "the", "World's", "Fair"]
    joined = " ".join(words)
    for seed in range(50):
        span = random_span(text, random.Random(seed))
        assert 1 <= len(span.split()) <= max(SPAN_WORDS) and span in joined
    assert random_span("two words", random.Random(0)) in ("two", "words", "two words")
    assert random_span(" ... ", random.Random(0)) == ""
    assert random_span(text, random.Random(3)) == random_span(text, random.Random(3))


def test_span_views_cut_queries_to_spans_and_leave_the_rest_unchanged():
    texts = TEXTS + ["a sixth text with several words in it", "the seventh and last one of them"]
    examples = [{"text": t, "index": i} for i, t in enumerate(texts)]
    gem = tiny_gem("llama")
    batches = {share: GemCollator(gem.tokenizer, gem.special_ids, gem.bos, flat_config(span_views=share, batch_size=7))(
        examples) for share in (0.0, 1.0)}
    seen = [batches[0.0]["query_texts"], batches[0.0]["positive_texts"], batches[1.0]["query_texts"],
            batches[1.0]["positive_texts"]]  # what a teacher reads
    plain_q, span_q = seen[0], seen[2]
    assert plain_q == [gem.tokenizer.decode(text_ids(gem.tokenizer, [t])[0][0]) for t in texts]
    assert all(q in " ".join(span_words(t)) and len(q.split()) <= max(SPAN_WORDS) for q, t in zip(span_q, texts))
    assert sum(len(q) for q in span_q) < sum(len(q) for q in plain_q)
    no, yes = batches[0.0], batches[1.0]
    assert torch.equal(no["input_ids"], yes["input_ids"]) and torch.equal(no["labels"], yes["labels"])
    assert torch.equal(no["positive"]["input_ids"], yes["positive"]["input_ids"]), "positives are not cut"
    assert seen[1] == seen[3], "the teacher embeds the same positives"
    n_query = int((yes["query"]["roles"] == Role.PREFIX).sum())
    assert n_query < int((no["query"]["roles"] == Role.PREFIX).sum())


def test_reconstruction_min_tokens_cuts_texts_to_lengths_between_it_and_the_budget():
    texts = ["a long text with many many words in it, far longer than the budget " * 3] * 40
    cfg = flat_config(p_plain=0.0, reconstruction_share=1.0, k=1, batch_size=4, pack=False, max_length=40,
                      reconstruction_min_tokens=4)
    gem, b = collate(cfg, texts=texts, contrastive=False)
    budget = (40 - len(gem.bos) - 1) // 2
    lengths = [int((b["roles"][r] == Role.PREFIX).sum()) for r in range(b["input_ids"].shape[0])]
    assert min(lengths) >= 4 and max(lengths) <= budget and len(set(lengths)) > 5
    for r in range(b["input_ids"].shape[0]):
        ids = b["input_ids"][r]
        assert ids[b["roles"][r] == Role.PREFIX].tolist() == ids[b["roles"][r] == Role.SUFFIX].tolist()
    whole = collate(flat_config(p_plain=0.0, k=1, batch_size=4, pack=False, max_length=40), texts=texts,
                    contrastive=False)[1]
    assert {int((whole["roles"][r] == Role.PREFIX).sum()) for r in range(whole["input_ids"].shape[0])} == {budget}
