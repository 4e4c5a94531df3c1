"""Reconstruction really decodes a text from S alone: a tiny model trained here on reconstruction
rows (`x | S | x`) recovers its training texts exactly, through `GemModel.reconstruct_ids` (which
sees only the S tokens' cache) and `evaluation.language.reconstruction_by_length`."""

import json

import pytest
import torch

from tests.conftest import flat_config
from lab.evaluation.language import reconstruction_by_length
from lab.training.collate import GemCollator
from lab.training.losses import LogitScale
from lab.training.objective import GemObjective

from .conftest import tiny_gem

WORDS = ["tiger", "apple", "stone", "river"]  # 5 byte tokens each


def _train(end: bool):
    torch.manual_seed(0)
    gem = tiny_gem("llama", k=1, max_length=32)
    cfg = flat_config(p_plain=0.0, reconstruction_share=1.0, k=1, batch_size=4, max_length=32, pack=False)
    cfg = cfg.updated({"rows.reconstruction_end": end})
    collate = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)
    batch = collate([{"text": w, "index": i} for i, w in enumerate(WORDS)], contrastive=False)
    objective = GemObjective(gem.model, LogitScale())
    optimizer = torch.optim.AdamW(gem.model.parameters(), lr=3e-3)
    gem.model.train()
    for _ in range(300):
        loss = objective(batch, alpha=0.0)["backward"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    gem.model.eval()
    return gem, float(loss.detach())


@pytest.fixture(scope="module")
def trained():
    """A tiny llama trained (full fine-tune, NTP on reconstruction rows only) to rebuild WORDS."""
    return _train(end=False)


@pytest.fixture(scope="module")
def trained_to_stop():
    """The same, with each copy ended by EOS (`rows.reconstruction_end`)."""
    return _train(end=True)


def test_a_model_trained_to_reconstruct_rebuilds_its_texts_from_s_alone(trained):
    gem, final_loss = trained
    # 10 targets a row; the first letter after BOS is one of 4 equally likely: the floor is ln(4)/10
    assert final_loss < 0.16, "the tiny model memorised the reconstruction rows"
    for w in WORDS:
        assert gem.reconstruct_ids(w, max_new_tokens=5) == gem.text_ids(w)
        assert gem.reconstruct(w, max_new_tokens=5) == w


def test_reconstruction_depends_on_s(trained):
    """Different texts give different decodings: the decoder reads S, not a memorised constant."""
    gem, _ = trained
    assert len({tuple(gem.reconstruct_ids(w, max_new_tokens=5)) for w in WORDS}) == len(WORDS)


def test_reconstruction_by_length_reports_exact_matches(trained, tmp_path):
    gem, _ = trained
    heldout = tmp_path / "words.jsonl"
    heldout.write_text("".join(json.dumps({"text": w}) + "\n" for w in WORDS))
    r = reconstruction_by_length(gem, str(heldout), lengths=(5,), per_length=4)
    assert (r["exact"], r["token_accuracy"], r["count"]) == ({5: 1.0}, {5: 1.0}, {5: 4})
    assert r["exact_with_stop"][5] < 1.0, "never taught where a text ends, it runs on past it"


def test_a_model_taught_the_end_marker_stops_where_the_text_ends(trained_to_stop, tmp_path):
    gem, _ = trained_to_stop
    for w in WORDS:
        assert gem.reconstruct(w) == w, "the default decode (cap = length + 8) stops at EOS"
    heldout = tmp_path / "words.jsonl"
    heldout.write_text("".join(json.dumps({"text": w}) + "\n" for w in WORDS))
    r = reconstruction_by_length(gem, str(heldout), lengths=(5,), per_length=4)
    assert r["exact_with_stop"] == {5: 1.0} and r["stopped"] == {5: 1.0} and r["num_beams"] == 1
    for w in WORDS:
        assert gem.reconstruct(w, num_beams=3) == w, "beam search finds the copy and its stop too"
    r = reconstruction_by_length(gem, str(heldout), lengths=(5,), per_length=4, num_beams=3)
    assert r["exact_with_stop"] == {5: 1.0} and r["num_beams"] == 3
    gem.gem_config.reconstruct_beams = 2  # a model that reads S with 2 beams by default is measured so
    try:
        assert reconstruction_by_length(gem, str(heldout), lengths=(5,), per_length=4)["num_beams"] == 2
    finally:
        gem.gem_config.reconstruct_beams = 1


@pytest.mark.parametrize("shipped_like", [False, True], ids=["bos", "shipped-like"])
def test_reconstruction_rows_end_with_eos_as_a_target(shipped_like):
    from lab.gem.lm_loss import IGNORE_INDEX
    from lab.gem.masks import Role

    from .conftest import shipped_like_gem

    gem = shipped_like_gem(max_length=64) if shipped_like else tiny_gem("llama", k=1, max_length=32)
    k = len(gem.special_ids)
    cfg = flat_config(p_plain=0.0, reconstruction_share=1.0, k=k, batch_size=2, max_length=32, pack=False)
    batch = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg.updated({"rows.reconstruction_end": True}))(
        [{"text": "tiger", "index": 0}], contrastive=False)
    suffix = batch["roles"][0] == Role.SUFFIX
    ids, labels = batch["input_ids"][0][suffix].tolist(), batch["labels"][0][suffix].tolist()
    assert ids == gem.text_ids("tiger") + [gem.tokenizer.eos_token_id] and IGNORE_INDEX not in labels
