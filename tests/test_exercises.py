"""Exercise checks accept the right answer and refuse a wrong one (each can fail)."""

import torch

from lab.course import exercises as ex
from lab.gem.leak import leak_check
from lab.gem.masks import Role as R
from lab.gem.masks import gem_mask
from lab.gem.tokens import Row
from lab.training.collate import GemCollator
from lab.training.config import TrainConfig

from .conftest import tiny_gem

ROLES = torch.tensor([[R.BOS, R.PREFIX, R.PREFIX, R.PREFIX, R.SPECIAL, R.SPECIAL, R.SUFFIX, R.SUFFIX, R.SUFFIX]])


def test_mask_exercises():
    assert ex.check_two_specials(torch.tensor([[R.BOS, R.PREFIX, R.PREFIX, R.SPECIAL, R.SPECIAL]]))
    assert not ex.check_two_specials(torch.tensor([[R.BOS, R.PREFIX, R.SPECIAL, R.SUFFIX]]))
    assert ex.check_bos_cells(ROLES, 3) and not ex.check_bos_cells(ROLES, 4)
    assert ex.check_gist_extra_cells(3, 3) and not ex.check_gist_extra_cells(3, 6)


def test_the_leak_exercise_needs_a_broken_mask():
    gem = tiny_gem("llama", k=1)

    def leaky(roles):
        m = gem_mask(roles).clone()
        m[:, :, roles[0] == R.SUFFIX, 1] = True  # the suffix may see the first prefix token
        return m

    args = ("the prefix text that must stay hidden", " and then the suffix")
    assert not ex.check_leak_detected(leak_check(gem, *args))
    assert ex.check_leak_detected(leak_check(gem, *args, mask_fn=leaky))


def test_row_exercises(capsys):
    gem = tiny_gem("llama", k=3)
    texts = [{"text": t, "index": i} for i, t in enumerate(["one text here", "another text", "a third one"])]
    cfg = TrainConfig(p_plain=0.0, k=3, batch_size=3, pack=False)
    assert ex.check_k_specials(GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)(texts), 3)
    assert not ex.check_k_specials(GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)(texts), 2)
    short = GemCollator(gem.tokenizer, gem.special_ids, gem.bos,
                        TrainConfig(p_plain=0.0, reconstruction_share=0.0, k=3, batch_size=2))
    short([{"text": "ab", "index": 0}])
    assert ex.check_short_rows_skipped(short.stats)
    many = [{"text": t * 3, "index": i} for i, t in enumerate(["cat ", "a dog ", "fish and chips ", "x y "])]
    unpacked = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, TrainConfig(k=3, batch_size=4, pack=False))(many)
    packed = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, TrainConfig(k=3, batch_size=4, pack=True))(many)
    assert ex.check_packing(unpacked, packed) and not ex.check_packing(packed, unpacked)
    assert ex.check_literal_special_string(gem.text_ids("say <|gem_0|> now"), gem.special_ids)
    assert not ex.check_literal_special_string(Row.build([1], gem.special_ids).input_ids, gem.special_ids)
    assert "✓" in capsys.readouterr().out


def test_run_and_timing_exercises(capsys):
    from lab.training.config import TrainConfig

    cfg = TrainConfig(positive="dropout")
    rows = [{"step": 1, "loss": 2.0, "cl": 0.0}, {"step": 2, "loss": 1.5, "cl": 0.3, "eval_lee50_spearman": 0.1}]
    assert ex.check_ablation_run(cfg, rows, {"positive": "dropout"}, reference=rows)
    assert not ex.check_ablation_run(TrainConfig(positive="article"), rows, {"positive": "dropout"})
    assert not ex.check_ablation_run(cfg, rows[:1], {"positive": "dropout"}), "no evals logged"
    assert ex.check_resume(rows, [dict(r) for r in rows])
    assert not ex.check_resume(rows, [{**r, "loss": r["loss"] + 0.1} for r in rows])
    assert ex.check_one_prefill_faster(1.0, 1.5, 400) and not ex.check_one_prefill_faster(1.0, 1.5, 30)
    assert not ex.check_number("x", None, 1.0) and "your turn" in capsys.readouterr().out
