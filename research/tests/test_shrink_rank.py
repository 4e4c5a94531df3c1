"""research.reconstruction.shrink_rank: a LoRA stored at a smaller rank is the best approximation of its update."""

import json

import pytest
import torch

from research.reconstruction.shrink_rank import shrink_adapter_weights, shrink_release, shrunk_pair


def _pair(r=8, n_in=20, n_out=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, n_in, generator=g, dtype=torch.float64), torch.randn(n_out, r, generator=g, dtype=torch.float64)


def test_the_full_rank_gives_the_same_update():
    a, b = _pair()
    a2, b2 = shrunk_pair(a, b, 8)
    torch.testing.assert_close(b2 @ a2, b @ a)


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_a_smaller_rank_is_the_best_approximation_of_the_update(rank):
    a, b = _pair()
    a2, b2 = shrunk_pair(a, b, rank)
    assert a2.shape == (rank, 20) and b2.shape == (12, rank)
    u, s, vh = torch.linalg.svd(b @ a)
    torch.testing.assert_close(b2 @ a2, (u[:, :rank] * s[:rank]) @ vh[:rank])  # Eckart-Young


def test_only_lora_pairs_change():
    a, b = _pair()
    weights = {"m.lora_A.weight": a, "m.lora_B.weight": b, "other": torch.ones(3)}
    out = shrink_adapter_weights(weights, 2)
    assert out["m.lora_A.weight"].shape == (2, 20) and out["other"] is weights["other"]


def test_a_rank_not_below_the_adapters_is_refused(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    for rank in (0, 8, 9):
        with pytest.raises(ValueError, match=f"rank={rank}: give a rank between 1 and 7, below the adapter's 8"):
            shrink_release(tmp_path, tmp_path / "out", rank)
