"""The helpers notebooks use, each checked against a hand computation."""

import math

import numpy as np
import pytest
import torch

from tests.conftest import flat_config
from lab.evaluation.quick import neighbour_agreement
from lab.gem.lm_loss import IGNORE_INDEX, ntp_loss, per_token_loss
from lab.training.collate import GemCollator, describe_row
from lab.training.config_files import config_diff

from .conftest import tiny_gem


def test_per_token_loss_is_minus_log_probability_and_averages_to_the_ntp_loss():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, 2]])
    got = per_token_loss(logits, labels)[0]
    # position 0 predicts labels[1] = 1 from logits [2, 0, 0]: -log(e^0 / (e^2 + 2))
    assert got[0].item() == pytest.approx(-math.log(1 / (math.e ** 2 + 2)))
    assert math.isnan(got[1].item()), "labels[2] is ignored"
    assert got[2].item() == pytest.approx(-math.log(math.e ** 3 / (math.e ** 3 + 2)))
    assert torch.nanmean(got).item() == pytest.approx(ntp_loss(logits, labels).item())


def test_describe_row_lists_tokens_roles_positions_and_targets():
    gem = tiny_gem("llama", k=1)
    cfg = flat_config(p_plain=0.0, reconstruction_share=1.0, k=1, batch_size=2, pack=False)
    batch = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)([{"text": "hi", "index": 0}], contrastive=False)
    rows = describe_row(batch, gem.tokenizer)
    assert [r["token"] for r in rows] == ["<s>", "h", "i", "<|gem_0|>", "h", "i"]
    assert [r["role"] for r in rows] == ["bos", "prefix", "prefix", "special", "suffix", "suffix"]
    assert [r["position"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r["NTP target?"] for r in rows] == ["–", "yes", "yes", "–", "yes", "yes"]


def test_neighbour_agreement_hand_cases():
    emb = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.141, 0.99]], dtype=np.float32)
    assert neighbour_agreement(emb, ["a", "a", "b", "b"], k=1) == 1.0
    assert neighbour_agreement(emb, ["a", "b", "a", "b"], k=1) == 0.0
    # k=2: each point's second neighbour is from the other pair -> half agree
    assert neighbour_agreement(emb, ["a", "a", "b", "b"], k=2) == 0.5
    with pytest.raises(ValueError, match="k=4"):
        neighbour_agreement(emb, ["a"] * 4, k=4)


def test_config_diff_names_what_an_ablation_changes():
    recipe = flat_config(k=1, p_plain=0.8, output_dir="runs/a")
    ablation = flat_config(k=2, p_plain=0.8, output_dir="runs/b")
    assert config_diff(ablation, recipe) == {"gem.k": 2}
    assert config_diff(ablation, recipe, ignore=()) == {"gem.k": 2, "run.output_dir": "runs/b"}
    assert config_diff(recipe, recipe) == {}
