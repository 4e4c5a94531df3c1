"""Exercise checks accept the right answer and refuse a wrong one (each can fail)."""

import pytest
import torch

from tests.conftest import flat_config
from lab.course import exercises as ex
from lab.gem.leak import leak_check
from lab.gem.masks import Role as R
from lab.gem.masks import gem_mask
from lab.gem.tokens import Row
from lab.training.collate import GemCollator

from .conftest import shipped_like_gem, tiny_gem

ROLES = torch.tensor([[R.BOS, R.PREFIX, R.PREFIX, R.PREFIX, R.SPECIAL, R.SPECIAL, R.SUFFIX, R.SUFFIX, R.SUFFIX]])


def test_mask_exercises():
    assert ex.check_two_specials(torch.tensor([[R.BOS, R.PREFIX, R.PREFIX, R.SPECIAL, R.SPECIAL]]))
    assert not ex.check_two_specials(torch.tensor([[R.BOS, R.PREFIX, R.SPECIAL, R.SUFFIX]]))
    assert ex.check_bos_cells(ROLES, 3) and not ex.check_bos_cells(ROLES, 4)
    assert ex.check_gist_extra_cells(3, 3) and not ex.check_gist_extra_cells(3, 6)


@pytest.mark.parametrize("make", [lambda: tiny_gem("llama", k=1), shipped_like_gem], ids=["bos", "shipped-like"])
def test_the_leak_exercise_needs_a_broken_mask(make):
    gem = make()

    def template(roles):  # the notebook's cell, untouched
        return gem_mask(roles, suffix_sees_bos=gem.suffix_sees_bos).clone()

    def leaky(roles):
        m = template(roles)
        m[:, :, roles[0] == R.SUFFIX, 1] = True  # the suffix may see the first prefix token
        return m

    def sinkless(roles):  # hides the sink from the suffix: the logits change, but nothing leaks
        return gem_mask(roles).clone()

    args = ("the prefix text that must stay hidden", " and then the suffix")
    assert not ex.check_leak_detected(leak_check(gem, *args))
    assert not ex.check_leak_detected(leak_check(gem, *args, mask_fn=template))
    assert not ex.check_leak_detected(leak_check(gem, *args, mask_fn=sinkless))
    assert ex.check_leak_detected(leak_check(gem, *args, mask_fn=leaky))


def test_row_exercises(capsys):
    gem = tiny_gem("llama", k=3)
    texts = [{"text": t, "index": i} for i, t in enumerate(["one text here", "another text", "a third one"])]
    cfg = flat_config(p_plain=0.0, k=3, batch_size=3, pack=False)
    assert ex.check_k_specials(GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)(texts), 3)
    assert not ex.check_k_specials(GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)(texts), 2)
    short = GemCollator(gem.tokenizer, gem.special_ids, gem.bos,
                        flat_config(p_plain=0.0, reconstruction_share=0.0, k=3, batch_size=2))
    short([{"text": "ab", "index": 0}])
    assert ex.check_short_rows_skipped(short.stats)
    many = [{"text": t * 3, "index": i} for i, t in enumerate(["cat ", "a dog ", "fish and chips ", "x y "])]
    unpacked = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, flat_config(k=3, batch_size=4, pack=False))(many)
    packed = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, flat_config(k=3, batch_size=4, pack=True))(many)
    assert ex.check_packing(unpacked, packed) and not ex.check_packing(packed, unpacked)
    assert ex.check_literal_special_string(gem.text_ids("say <|gem_0|> now"), gem.special_ids)
    assert not ex.check_literal_special_string(Row.build([1], gem.special_ids).input_ids, gem.special_ids)
    assert "✓" in capsys.readouterr().out


def test_run_and_timing_exercises(capsys):

    cfg = flat_config(positive="dropout")
    rows = [{"step": 1, "loss": 2.0, "cl": 0.0}, {"step": 2, "loss": 1.5, "cl": 0.3, "eval_lee50_spearman": 0.1}]
    assert ex.check_ablation_run(cfg, rows, {"extensions.positive": "dropout"}, reference=rows)
    assert not ex.check_ablation_run(flat_config(positive="article"), rows, {"extensions.positive": "dropout"})
    assert not ex.check_ablation_run(cfg, rows[:1], {"extensions.positive": "dropout"}), "no evals logged"
    assert ex.check_resume(rows, [dict(r) for r in rows])
    assert not ex.check_resume(rows, [{**r, "loss": r["loss"] + 0.1} for r in rows])
    assert ex.check_one_prefill_faster(1.0, 1.5, 400) and not ex.check_one_prefill_faster(1.0, 1.5, 30)
    assert not ex.check_number("x", None, 1.0) and "your turn" in capsys.readouterr().out


def test_map_and_evaluation_exercises(capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    labels = ["a"] * 20 + ["b"] * 20
    emb = np.concatenate([rng.normal(0, 1, (20, 8)) + 5, rng.normal(0, 1, (20, 8)) - 5])
    faithful = emb[:, :2]  # keeps the two clusters
    scrambled = rng.normal(0, 1, (40, 2))  # loses them
    assert ex.check_map_neighbourhoods(scrambled, faithful, emb, labels, "large")
    assert not ex.check_map_neighbourhoods(scrambled, faithful, emb, labels, "small")
    assert not ex.check_map_neighbourhoods(None, faithful, emb, labels, "large")

    q = {str(i): [float(i % 3 == 0), 0.3] for i in range(30)}
    q_gem = {**q, "1": [1.0, 0.6], "4": [1.0, 0.6]}
    base_m, gem_m = {"per_question": q}, {"per_question": q_gem}
    from lab.evaluation.mmlu import paired_difference

    paired = paired_difference(base_m, gem_m)["stderr"]
    pa, pb = 10 / 30, 12 / 30
    unpaired = (pa * (1 - pa) / 30 + pb * (1 - pb) / 30) ** 0.5
    assert paired < unpaired
    assert ex.check_paired_stderr(paired, unpaired, base_m, gem_m)
    assert not ex.check_paired_stderr(unpaired, paired, base_m, gem_m), "swapped answers fail"

    rows = [{"pooling": "mean", "tasks": {"LocalLee50STS": 0.5, "LocalBBCClustering": 0.1}},
            {"pooling": "gem", "tasks": {"LocalLee50STS": 0.55, "LocalBBCClustering": 0.3}}]
    assert ex.check_biggest_gain("BBC clust", rows) and ex.check_biggest_gain("LocalBBCClustering", rows)
    assert not ex.check_biggest_gain("Lee50 STS", rows)

    samples = ["the cat sat on the mat", "the cat sat again"]
    assert ex.distinct_bigrams(samples) == 6 / 8  # "the cat", "cat sat" repeat
    assert ex.check_distinct_bigrams(samples, 0.75) and not ex.check_distinct_bigrams(samples, 1.0)


def test_out_of_domain_exercise_measures_both_models():
    from lab.corpora.eval_sets import news_texts
    from lab.evaluation.quick import text_perplexity

    base, gem = tiny_gem("llama"), tiny_gem("qwen2")
    texts = news_texts(4)
    truth = 100 * (text_perplexity(gem, texts, max_tokens=128) / text_perplexity(base, texts, max_tokens=128) - 1)
    assert ex.check_out_of_domain_change(truth, base, gem, n_texts=4)
    assert not ex.check_out_of_domain_change(truth + 1.0, base, gem, n_texts=4)
