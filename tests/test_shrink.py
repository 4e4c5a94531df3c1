"""lab.weights.shrink: a LoRA stored at a smaller rank is the best approximation of its update, and
`export_release(rank=...)` ships it (the shipped gem-smollm2-135m: trained at rank 64, stored at 36)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import lab
from lab.storage import read_manifest
from lab.weights.shrink import shrink_adapter_in_place, shrink_adapter_weights, shrunk_pair


def _pair(r=8, n_in=20, n_out=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, n_in, generator=g, dtype=torch.float64), torch.randn(n_out, r, generator=g, dtype=torch.float64)


def _best(update: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(update)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]  # Eckart-Young, from a dense SVD


def test_the_full_rank_gives_the_same_update():
    a, b = _pair()
    a2, b2 = shrunk_pair(a, b, 8)
    torch.testing.assert_close(b2 @ a2, b @ a)


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_a_smaller_rank_is_the_best_approximation_of_the_update(rank):
    a, b = _pair()
    a2, b2 = shrunk_pair(a, b, rank)
    assert a2.shape == (rank, 20) and b2.shape == (12, rank)
    torch.testing.assert_close(b2 @ a2, _best(b @ a, rank))


def test_only_lora_pairs_change():
    a, b = _pair()
    weights = {"m.lora_A.weight": a, "m.lora_B.weight": b, "other": torch.ones(3)}
    out = shrink_adapter_weights(weights, 2)
    assert out["m.lora_A.weight"].shape == (2, 20) and out["other"] is weights["other"]


def test_a_rank_not_below_the_adapters_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    for rank in (0, 8, 9):
        with pytest.raises(ValueError, match=f"rank={rank}: give a rank between 1 and 7, below the adapter's 8"):
            shrink_adapter_in_place(tmp_path, rank)


def test_a_release_stored_at_a_smaller_rank_keeps_the_scale_and_the_best_update(tmp_path):
    """Configured like the shipped model (k, sink, head): `export_release(rank=...)` writes the rank,
    alpha at the same scale, each update's best approximation, and the rank it was trained at; the
    release loads, and at rank r - 1 of a barely trained adapter it embeds almost as the original."""
    from lab.training.tiny_run import tiny_gem_checkpoint
    from lab.weights.export import export_release

    ckpt = Path(tiny_gem_checkpoint(str(tmp_path / "run"), steps=3))
    config = json.loads((ckpt / "adapter" / "adapter_config.json").read_text())
    rank = config["r"] - 1
    out = export_release(ckpt, tmp_path / "release", rank=rank)
    shrunk = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert shrunk["r"] == rank and shrunk["lora_alpha"] / rank == pytest.approx(config["lora_alpha"] / config["r"])
    assert read_manifest(out)["metadata"]["shrunk_from_rank"] == config["r"]
    before = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    key = next(k for k in before if k.endswith("lora_A.weight"))
    other = key.replace("lora_A", "lora_B")
    torch.testing.assert_close((after[other] @ after[key]).double(),
                               _best(before[other].double() @ before[key].double(), rank), atol=1e-6, rtol=1e-4)
    texts = ["a text to embed", "another, longer one"]
    full = lab.load(str(ckpt), dtype="float32").encode(texts)
    small = lab.load(str(out), dtype="float32")
    assert small.gem_config == lab.load(str(ckpt), dtype="float32").gem_config
    np.testing.assert_allclose(small.encode(texts), full, atol=0.05)


def test_rank_goes_with_a_release_only(tmp_path):
    from lab.cli import main

    with pytest.raises(SystemExit, match="--rank go with --to release"):
        main(["export", str(tmp_path), "--to", "merged", str(tmp_path / "out"), "--rank", "4"])
