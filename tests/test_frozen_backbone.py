"""A frozen backbone: only the GEM token rows and the readout head train, so the language model is
kept exactly; the head is saved, loaded, resumed and exported with the checkpoint."""

import dataclasses
import json

import pytest
import torch

from tests.conftest import flat_config
from lab.gem import GemModel
from lab.gem.config import GemConfig
from lab.gem.readout import ReadoutHead
from lab.gem.tokens import add_gem_tokens
from lab.weights.checkpoints import load_checkpoint, save_checkpoint
from lab.weights.tiny import build_tiny
from lab.training.loop import train
from lab.training.setup import prepare_model

from lab.storage import PROJECT_ROOT as ROOT


def test_an_untrained_head_is_the_identity_and_round_trips(tmp_path):
    head = ReadoutHead(8)
    x = torch.randn(3, 8)
    torch.testing.assert_close(head(x), x)
    with torch.no_grad():
        head.linear.weight.normal_()
    head.save(tmp_path)
    other = ReadoutHead(8)
    other.load(tmp_path)
    torch.testing.assert_close(other(x), head(x))
    with pytest.raises(FileNotFoundError, match="no readout_head.safetensors"):
        ReadoutHead(8).load(tmp_path / "missing")


def _cfg(tmp_path, **kw):
    return flat_config(**{**dict(model="tiny-llama", corpus=str(ROOT / "data/sample/wiki_train_sample.jsonl"),
                                 heldout=str(ROOT / "data/sample/wiki_heldout_sample.jsonl"), batch_size=8,
                                 max_length=48, steps=4, ntp_steps=2, warmup_steps=1, save_every=2, eval_every=0,
                                 log_every=1, p_plain=0.0, lr_ntp=1e-2, lr_cl=1e-2, train_backbone=False,
                                 readout_head=True, output_dir=str(tmp_path / "run"), precision="fp32"), **kw})


def test_frozen_backbone_trains_only_gem_rows_and_the_head(tmp_path):
    cfg = _cfg(tmp_path)
    before = prepare_model(cfg, torch.device("cpu"))
    weights = {k: v.clone() for k, v in before.model.state_dict().items()}
    ckpt = train(cfg)
    gem = load_checkpoint(ckpt)
    after = gem.model.state_dict()
    ids = gem.special_ids
    changed = [k for k in weights if not torch.equal(weights[k], after[k])]
    assert changed == ["model.embed_tokens.weight", "lm_head.weight"] or changed == ["model.embed_tokens.weight"]
    rows = torch.ones(len(after["model.embed_tokens.weight"]), dtype=torch.bool)
    rows[ids] = False
    torch.testing.assert_close(after["model.embed_tokens.weight"][rows], weights["model.embed_tokens.weight"][rows],
                               rtol=0, atol=0)
    assert not torch.equal(after["model.embed_tokens.weight"][ids], weights["model.embed_tokens.weight"][ids])
    assert gem.readout_head is not None and gem.readout_head.linear.weight.abs().sum() > 0, "the head trained"
    assert not (ckpt / "weights.safetensors").exists() and not (ckpt / "adapter").exists(), "no backbone weights"
    # the language model is the base model: same logits on plain text
    base, _ = build_tiny("llama")
    text = torch.tensor([[1, 70, 71, 72, 73]])
    with torch.no_grad():
        torch.testing.assert_close(gem.model(input_ids=text).logits[..., :base.config.vocab_size],
                                   base(input_ids=text).logits, rtol=1e-5, atol=1e-5)


def test_frozen_run_resumes_to_the_same_head(tmp_path):
    straight = load_checkpoint(train(_cfg(tmp_path / "a")))
    cfg = _cfg(tmp_path / "b")
    train(cfg, stop_after=2)
    resumed = load_checkpoint(train(cfg, resume=True))
    torch.testing.assert_close(resumed.readout_head.linear.weight, straight.readout_head.linear.weight)
    texts = ["a first text", "and a second one"]
    torch.testing.assert_close(torch.as_tensor(resumed.encode(texts)), torch.as_tensor(straight.encode(texts)))


def test_a_frozen_backbone_needs_gem_rows():
    with pytest.raises(ValueError, match="learns nothing from plain rows"):
        flat_config(train_backbone=False, p_plain=1.0)


def _gem_with_head(seed: int = 0, readout_dim: int = 0) -> GemModel:
    model, tok = build_tiny("llama")
    add_gem_tokens(model, tok, 1)
    gem = GemModel(model, tok, GemConfig(k=1, trained=True, readout_head=True, readout_dim=readout_dim,
                                         base_model="tiny-llama"))
    torch.manual_seed(seed)
    with torch.no_grad():
        gem.readout_head.linear.weight.normal_(std=0.1)
        gem.readout_head.linear.bias.normal_(std=0.1)
    return gem


@pytest.mark.parametrize("readout_dim", [0, 7], ids=["residual-head", "projection-head"])
def test_head_changes_the_embedding_and_survives_save_and_exports(tmp_path, readout_dim):
    from sentence_transformers import SentenceTransformer

    from lab.weights.export import export_merged, export_sentence_transformers

    gem = _gem_with_head(readout_dim=readout_dim)
    texts = ["the first text", "a second, longer text"]
    with_head = gem.encode(texts)
    assert with_head.shape == (2, readout_dim or gem.hidden_size) and gem.embedding_dim() == with_head.shape[1]
    if not readout_dim:
        plain = GemModel(gem.model, gem.tokenizer, dataclasses.replace(gem.gem_config, readout_head=False))
        assert not torch.allclose(torch.as_tensor(with_head), torch.as_tensor(plain.encode(texts)), atol=1e-3)
    save_checkpoint(gem, tmp_path / "ckpt")
    torch.testing.assert_close(torch.as_tensor(load_checkpoint(tmp_path / "ckpt").encode(texts)), torch.as_tensor(with_head))
    merged = load_checkpoint(export_merged(tmp_path / "ckpt", tmp_path / "merged"))
    torch.testing.assert_close(torch.as_tensor(merged.encode(texts)), torch.as_tensor(with_head), rtol=1e-5, atol=1e-5)
    st_dir = export_sentence_transformers(tmp_path / "ckpt", tmp_path / "st")
    kinds = [m["type"].rsplit(".", 1)[1] for m in json.loads((st_dir / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling", "Dense", "Normalize"]
    st = SentenceTransformer(str(st_dir), device="cpu").encode(texts, convert_to_numpy=True)
    torch.testing.assert_close(torch.as_tensor(st), torch.as_tensor(with_head), rtol=1e-4, atol=1e-4)


def test_a_head_file_the_config_disowns_and_a_missing_gpu_are_named(tmp_path):
    import json
    import shutil

    import lab
    from lab.storage import PROJECT_ROOT
    from lab.storage import reseal

    src = PROJECT_ROOT / "checkpoints" / "gem-smollm2-135m"
    ckpt = tmp_path / "ckpt"
    shutil.copytree(src, ckpt)
    cfg = json.loads((ckpt / "gem_config.json").read_text())
    cfg.update(readout_head=False, readout_dim=0)
    (ckpt / "gem_config.json").write_text(json.dumps(cfg))
    reseal(ckpt)  # as if the lab had written it so
    with pytest.raises(RuntimeError, match="holds readout_head.safetensors but .*readout_head: false"):
        lab.load(str(ckpt), device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device; use device='cpu'"):
            lab.load("tiny-llama", device="cuda")
