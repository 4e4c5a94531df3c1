"""The stage blend is exact: t = 0 and 1 give the two stages, t in between the weight average of both."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lab.weights.checkpoints import load_checkpoint, save_checkpoint
from research.reconstruction.interpolate import write_blend
from tests.conftest import shipped_like_gem

TEXTS = ["a short text about cats", "another one, about the stock market and banks"]


def _stage(seed: int):
    """A shipped-like tiny GEM model with a LoRA adapter (r 4) and GEM rows / head all set by `seed`."""
    gem = shipped_like_gem(max_length=64)
    gem.model = get_peft_model(gem.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in gem.model.named_parameters():
            if "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        emb = gem.model.get_input_embeddings().weight
        emb[gem.special_ids] = torch.randn(len(gem.special_ids), emb.shape[1], generator=g) * emb.std()
        for p in gem.readout_head.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return gem


def _weights(gem) -> dict:
    return {k: v.clone() for k, v in gem.model.state_dict().items()} | {
        f"head.{k}": v.clone() for k, v in gem.readout_head.state_dict().items()}


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    return save_checkpoint(_stage(1), root / "a"), save_checkpoint(_stage(2), root / "b")


def test_blend_ends_are_the_stages_and_the_middle_is_the_weight_average(stages, tmp_path):
    a, b = (load_checkpoint(p) for p in stages)
    wa, wb = _weights(a), _weights(b)
    for t in (0.0, 0.3, 1.0):
        blend = load_checkpoint(write_blend(str(stages[0]), str(stages[1]), t, tmp_path / f"t{t}"))
        for name, w in _weights(blend).items():
            want = (1 - t) * wa[name] + t * wb[name]
            assert torch.allclose(w, want, atol=1e-6), (t, name)
        if t in (0.0, 1.0):
            end = a if t == 0.0 else b
            assert torch.allclose(torch.as_tensor(blend.encode(TEXTS)), torch.as_tensor(end.encode(TEXTS)), atol=1e-5)
    assert not torch.allclose(wa["head.linear.weight"], wb["head.linear.weight"]), "the two stages must differ"


def test_blend_refuses_two_different_models_and_a_checkpoint_without_lora(stages, tmp_path):
    other = shipped_like_gem(max_length=32)  # another max_length: another gem_config.json
    other.model = get_peft_model(other.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    c = save_checkpoint(other, tmp_path / "c")
    with pytest.raises(ValueError, match="not two stages of one model"):
        write_blend(str(stages[0]), str(c), 0.5, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    plain = save_checkpoint(shipped_like_gem(max_length=64), tmp_path / "plain")  # no adapter
    with pytest.raises(ValueError, match="not a LoRA checkpoint"):
        write_blend(str(stages[0]), str(plain), 0.5, tmp_path / "y")
    assert not (tmp_path / "y").exists()
