"""The anchor term (`TrainConfig.anchor_weight`): a second training stage from a trained GEM model
holds the embedding at S to the starting model's, read from the same packed NTP batch."""

from pathlib import Path

import numpy as np
import pytest
import torch

import lab
from tests.conftest import flat_config, with_flat
from lab.training.collate import GemCollator
from lab.training.config import TrainConfig
from lab.training.losses import LogitScale
from lab.training.loop import train
from lab.gem.forward import gem_inputs
from lab.training.terms import AnchorTerm
from lab.training.objective import GemObjective, pooled_at
from lab.training.setup import anchor_reference, prepare_model
from .test_train import tiny_cfg

TEXTS = ["The river runs past.", "A short note.", "Prices rose again.", "She wrote novels.", "Rain is expected."]


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory):
    """A tiny GEM run (readout head included) and its config: the model a second stage starts from."""
    cfg = tiny_cfg(tmp_path_factory.mktemp("first"), readout_head=True, k=2, steps=4, ntp_steps=2)
    train(cfg)
    return cfg


def _second(first: TrainConfig, tmp_path, **kw) -> TrainConfig:
    return with_flat(first, init_from=first.run.output_dir, output_dir=str(tmp_path / "second"),
                               **{"p_plain": 0.0, "steps": 2, "ntp_steps": 2, **kw})


def _objective(cfg: TrainConfig, fused: bool = True) -> tuple[GemObjective, GemCollator]:
    """The objective of `cfg`'s run at its start (trained model perturbed, so it differs from the
    reference) and its collator."""
    gem = prepare_model(cfg, torch.device("cpu"))
    reference = anchor_reference(cfg, torch.device("cpu"))
    gem.model.load_state_dict(reference.model.state_dict())
    gem.readout_head.load_state_dict(reference.readout_head.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in gem.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn_like(p))
    objective = GemObjective(gem.model, LogitScale(), gem.suffix_sees_bos, fused_loss=fused,
                             readout_head=gem.readout_head, trainable_head_rows=gem.special_ids,
                             terms=[AnchorTerm(cfg.extensions.anchor_weight, reference)])
    collator = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)
    return objective, lambda examples: collator(examples, contrastive=False)


def _examples():
    return [{"text": t, "index": i} for i, t in enumerate(TEXTS)]


def test_the_anchor_is_the_cosine_gap_to_the_starting_model_and_packing_does_not_change_it(first_stage, tmp_path):
    cfg = _second(first_stage, tmp_path, anchor_weight=1.0, reconstruction_share=1.0, max_length=96)
    objective, collator = _objective(cfg)
    batch = collator(_examples())
    assert batch["s_index"].shape == (len(TEXTS), 2)
    out = objective(batch, alpha=0.0)
    ka = float(out["anchor"])
    assert 1e-4 < ka < 1.0, "a perturbed model is away from its start, but close"
    # the same rows unpacked, and through the reference (logits) path: the same term
    gem = objective.terms[0].reference
    unpacked = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, with_flat(cfg, pack=False))(_examples(),
                                                                                            contrastive=False)
    assert unpacked["input_ids"].shape[0] == len(TEXTS) > batch["input_ids"].shape[0]
    assert float(objective(unpacked, alpha=0.0)["anchor"]) == pytest.approx(ka, rel=1e-4)
    slow, _ = _objective(cfg, fused=False)
    assert float(slow(batch, alpha=0.0)["anchor"]) == pytest.approx(ka, rel=1e-4)
    # the loss carries it with its weight, and it has a gradient
    assert float(out["loss"]) == pytest.approx(float(out["ntp"]) + ka, rel=1e-5)
    out["backward"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in objective.named_parameters() if "lora_" in n)


def test_the_anchor_reads_each_text_s_embedding_from_the_packed_batch(first_stage, tmp_path):
    """What the term compares is the text's embedding: the S states of a row in the packed batch,
    through the head, equal `encode` of the row's text."""
    cfg = _second(first_stage, tmp_path, anchor_weight=1.0, reconstruction_share=1.0)
    objective, collator = _objective(cfg)
    batch = collator(_examples())
    reference = objective.terms[0].reference
    inputs = gem_inputs(reference.model, batch["input_ids"], batch["roles"], batch["segment_ids"], reference.suffix_sees_bos)
    with torch.no_grad():
        hidden = reference.model.get_base_model().get_decoder()(**inputs).last_hidden_state
        packed = torch.nn.functional.normalize(reference.readout_head(pooled_at(hidden, batch["s_index"])), dim=-1)
    budget = (cfg.rows.max_length - len(reference.bos) - cfg.gem.k) // 2
    tokenizer = reference.tokenizer
    texts = [tokenizer.decode(ids[:budget]) for ids in GemCollator(tokenizer, reference.special_ids, reference.bos, cfg)._ids(TEXTS)]
    reference.model.eval()
    np.testing.assert_allclose(packed.numpy(), reference.encode(texts, pooling="gem"), atol=1e-4)


def test_only_plain_rows_give_no_anchor_and_the_same_model_gives_zero(first_stage, tmp_path):
    cfg = _second(first_stage, tmp_path, anchor_weight=1.0, p_plain=1.0)
    objective, collator = _objective(cfg)
    batch = collator(_examples())
    assert batch["s_index"].shape == (0, 2) and float(objective(batch, alpha=0.0)["anchor"]) == 0.0
    cfg = _second(first_stage, tmp_path, anchor_weight=1.0, reconstruction_share=1.0)
    reference = anchor_reference(cfg, torch.device("cpu"))
    same = GemObjective(reference.model, LogitScale(), reference.suffix_sees_bos, readout_head=reference.readout_head,
                        trainable_head_rows=reference.special_ids, terms=[AnchorTerm(1.0, reference)])
    assert float(same(collator(_examples()), alpha=0.0)["anchor"]) == pytest.approx(0.0, abs=1e-5)


def test_the_config_names_what_the_anchor_needs():
    with pytest.raises(ValueError, match="set run.init_from"):
        flat_config(anchor_weight=1.0)
    with pytest.raises(ValueError, match="anchor_weight must be >= 0"):
        flat_config(anchor_weight=-1.0, init_from="x")
    with pytest.raises(ValueError, match="starting model"):
        AnchorTerm(1.0, None)


def test_an_anchored_second_stage_keeps_the_embedding_closer_to_its_start(first_stage, tmp_path):
    """Reconstruction-only steps at a high learning rate move the embedding; with the anchor on,
    the same steps leave it nearer where the first stage had it."""
    start = lab.load(str(Path(first_stage.run.output_dir) / f"checkpoint-{first_stage.optim.steps}"), dtype="float32")
    before = start.encode(TEXTS)
    moved = {}
    for weight in (0.0, 20.0):
        cfg = _second(first_stage, tmp_path / str(weight), anchor_weight=weight, reconstruction_share=1.0,
                      steps=6, ntp_steps=6, lr_ntp=3e-2, warmup_steps=1, save_every=6)
        after = lab.load(str(train(cfg)), dtype="float32").encode(TEXTS)
        moved[weight] = float(1 - (before * after).sum(1).mean())
    assert moved[0.0] > 1e-3, "the steps move the embedding"
    assert moved[20.0] < 0.5 * moved[0.0], moved
