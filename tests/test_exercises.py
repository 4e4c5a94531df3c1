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
    said = "say <|gem_0|> now"
    assert ex.check_literal_special_string(gem.text_ids(said), gem.special_ids, gem.tokenizer, said)
    assert not ex.check_literal_special_string(Row.build([1], gem.special_ids).input_ids, gem.special_ids,
                                               gem.tokenizer, said)
    assert not ex.check_literal_special_string([], gem.special_ids, gem.tokenizer, said), "nothing read is no answer"
    assert "✓" in capsys.readouterr().out


def test_run_and_timing_exercises(capsys):

    cfg = flat_config(positive="dropout")
    rows = [{"step": 1, "loss": 2.0, "cl": 0.0}, {"step": 2, "loss": 1.5, "cl": 0.3, "eval_lee50_spearman": 0.1}]
    assert ex.check_ablation_run(cfg, rows, {"extensions.positive": "dropout"}, reference=rows)
    assert not ex.check_ablation_run(flat_config(positive="article"), rows, {"extensions.positive": "dropout"})
    assert not ex.check_ablation_run(cfg, rows[:1], {"extensions.positive": "dropout"}), "no evals logged"
    assert not ex.check_resume(None, None)  # real runs: tests/test_train.py::test_resume_equals_straight_run
    fast, slow = ex.Seconds(1.0), ex.Seconds(1.5)
    assert ex.check_one_prefill_faster(fast, slow, 400) and not ex.check_one_prefill_faster(fast, slow, 30)
    assert "read once" in capsys.readouterr().out
    assert ex.check_one_prefill_faster(slow, fast, 400) and "no saving measured" in capsys.readouterr().out
    assert not ex.check_one_prefill_faster(1.0, 1.5, 400), "typed-in times are not measurements"
    _, took = ex.timed(lambda: sum(range(100)))
    assert isinstance(took, ex.Seconds) and took >= 0
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
    table = rows + [{"pooling": "encoder", "tasks": {"LocalLee50STS": 0.5, "LocalBBCClustering": 0.4}}]
    assert ex.check_trails_encoder(["BBC clust"], table) and ex.check_trails_encoder("LocalBBCClustering", table)
    assert not ex.check_trails_encoder(["BBC clust", "Lee50 STS"], table) and not ex.check_trails_encoder([], table)
    out = capsys.readouterr().out
    assert "BBC clust -10.0" in out, "the gaps are shown once the answer is right"
    assert not ex.check_trails_encoder(["Lee50"], table) and "header" in capsys.readouterr().out

    samples = ["the cat sat on the mat", "the cat sat again"]
    assert ex.distinct_bigrams(samples) == 6 / 8  # "the cat", "cat sat" repeat


def test_out_of_domain_exercise_measures_both_models():
    from lab.corpora.eval_sets import news_texts
    from lab.evaluation.quick import text_perplexity

    base, gem = tiny_gem("llama"), tiny_gem("qwen2")
    texts = news_texts(4)
    truth = 100 * (text_perplexity(gem, texts, max_tokens=128) / text_perplexity(base, texts, max_tokens=128) - 1)
    assert ex.check_out_of_domain_change(truth, base, gem, n_texts=4)
    assert not ex.check_out_of_domain_change(truth + 1.0, base, gem, n_texts=4)


def test_build_exercises_accept_the_lab_and_name_the_first_difference(capsys):
    """The 'build a piece of GEM' checks: the lab's own function passes; a near miss is refused with
    the place it differs (not the whole answer)."""
    import numpy as np

    from lab.gem.masks import gem_mask as lab_mask
    from lab.training.collate import labels_for
    from lab.training.losses import info_nce

    assert ex.check_gem_mask(lambda r, s, b: lab_mask(r, s, b))
    assert not ex.check_gem_mask(lambda r, s, b: lab_mask(r, None, b)), "packed rows must stay apart"
    assert "segments" in capsys.readouterr().out
    assert not ex.check_gem_mask(lambda r, s, b: lab_mask(r, s)), "the sink (suffix sees BOS) is part of the rule"

    gem = shipped_like_gem()
    from lab.training.config import TrainConfig

    batches = [GemCollator(gem.tokenizer, gem.special_ids, gem.bos, TrainConfig(
        rows={"p_plain": p, "reconstruction_end": True, "max_length": 48}, optim={"batch_size": 3}))(
        [{"text": t, "index": i} for i, t in enumerate(["one text here", "another short text", "and a third"])])
        for p in (0.0, 0.5)]
    assert ex.check_labels(labels_for, batches)
    assert not ex.check_labels(lambda ids, roles, pos: torch.where(roles == R.PAD, -100, ids), batches)
    assert "special" in capsys.readouterr().out

    sim = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.2, 0.4, 0.7]])
    assert ex.check_info_nce(lambda s, scale: -(scale * s).log_softmax(-1).diagonal().mean(), sim)
    assert not ex.check_info_nce(lambda s, scale: -(scale * s).log_softmax(0).diagonal().mean(), sim)
    q, d = torch.randn(4, 8), torch.randn(4, 8)
    qn, dn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(d, dim=-1)
    assert torch.allclose(info_nce(q, d, torch.tensor(20.0)), torch.nn.functional.cross_entropy(20 * qn @ dn.T, torch.arange(4)))

    texts = ["a short headline", "another one about sport"]
    assert ex.check_readout(lambda t: gem.encode(t), gem, texts)
    assert not ex.check_readout(lambda t: gem.encode(t, pooling="mean"), gem, texts), "mean pooling is not the readout"

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = ["a", "b", "c"] * 10
    from lab.evaluation.quick import neighbour_agreement
    assert ex.check_neighbour_agreement(neighbour_agreement, {"x": emb}, labels)
    with_self = lambda e, lab, k: float((np.asarray(lab)[np.argsort(-(e @ e.T), axis=1)[:, :k]] == np.asarray(lab)[:, None]).mean())  # noqa: E731
    assert not ex.check_neighbour_agreement(with_self, {"x": emb}, labels)


def test_predictions_are_recorded_and_the_patch_exercise_wants_one_first(tmp_path, monkeypatch, capsys):
    from lab import course
    from lab.course.build import patched_continuation

    monkeypatch.setenv("GEM_LAB_CACHE", str(tmp_path))
    gem = shipped_like_gem()
    assert not course.predict("6.1", "  ") and course.predictions() == {}
    truth = patched_continuation(gem, "A text about towers.", " The recipe", 4)
    assert not ex.check_patch_s(gem, "A text about towers.", " The recipe", truth, max_new_tokens=4), "predict first"
    assert course.predict("6.1", "B's topic") and course.predictions()["6.1"]["answer"] == "B's topic"
    assert ex.check_patch_s(gem, "A text about towers.", " The recipe", truth, max_new_tokens=4)
    assert not ex.check_patch_s(gem, "A text about towers.", " The recipe", truth + "x", max_new_tokens=4)
    assert "B's topic" in capsys.readouterr().out


def test_the_sampling_exercise_samples_again():
    gem = shipped_like_gem()
    samples = ex.sampled(gem, "The city", 3, max_new_tokens=5)
    kwargs = {"do_sample": True, "temperature": 0.8, "max_new_tokens": 30}
    torch.manual_seed(0)
    real = [gem.generate("The city", **kwargs) for _ in range(3)]
    assert ex.check_sampled(gem, "The city", real, ex.distinct_bigrams(real))
    assert not ex.check_sampled(gem, "The city", ["made up text"] * 3, ex.distinct_bigrams(["made up text"] * 3))
    assert len(samples) == 3
