"""A LoRA adapter stored at a smaller rank: the truncated SVD of each adapted weight's update.

    python -m lab export runs/NAME/checkpoint-300 --to release --rank 36 OUT   # the release, shrunk

A rank-r LoRA adds (alpha / r) * B A to each adapted weight. The best rank-n approximation of B A (in
every unitarily invariant norm, Eckart-Young) keeps its n largest singular directions; this writes them
as a rank-n LoRA with alpha = n * (alpha / r), so the scale, and the update up to the dropped
directions, stay. The SVD goes through QR factors of B and A^T, so it costs (r x r) work, not
(out x in). The shipped gem-smollm2-135m was trained at rank 64 and is stored at rank 36 this way
(its card gives what that costs: nothing measurable on embedding or language, a little on copying).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def shrunk_pair(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A' (rank, in), B' (out, rank)) with B' A' the best rank-`rank` approximation of B A, for
    A (r, in) and B (out, r); the singular values are split evenly between the two factors."""
    qb, rb = torch.linalg.qr(b.double())  # (out, r), (r, r)
    qa, ra = torch.linalg.qr(a.double().T)  # (in, r), (r, r)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    root = s[:rank].sqrt()
    return ((root[:, None] * vh[:rank]) @ qa.T).to(a.dtype), (qb @ (u[:, :rank] * root)).to(b.dtype)


def shrink_adapter_weights(weights: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """PEFT adapter weights with every lora_A / lora_B pair shrunk to `rank`; other tensors unchanged."""
    out = dict(weights)
    for key in weights:
        if key.endswith("lora_A.weight"):
            other = key.replace("lora_A.weight", "lora_B.weight")
            out[key], out[other] = shrunk_pair(weights[key], weights[other], rank)
    return out


def shrink_adapter_in_place(adapter: str | Path, rank: int) -> int:
    """Rewrite the PEFT adapter folder `adapter` at rank `rank` (same scale); returns the rank it had.
    Meant for a folder being written (e.g. inside `atomic_dir`): it is changed where it stands."""
    adapter = Path(adapter)
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    if not 0 < rank < config["r"]:
        raise ValueError(f"rank={rank}: give a rank between 1 and {config['r'] - 1}, below the adapter's {config['r']}")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{adapter} sets ranks per module (rank_pattern / alpha_pattern); a shrink keeps one rank")
    weights = shrink_adapter_weights(load_file(str(adapter / ADAPTER_WEIGHTS)), rank)
    had = config["r"]
    config.update(r=rank, lora_alpha=config["lora_alpha"] * rank / had)
    (adapter / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(weights, str(adapter / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return had
