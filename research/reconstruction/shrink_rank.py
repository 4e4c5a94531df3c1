"""Shrink a release's LoRA to a smaller rank: the truncated SVD of each adapted weight's update.

    python -m research.reconstruction.shrink_rank research/reconstruction/candidates/stage5-r64-300 \
        runs/stage5-r64-as-r40 --rank 40

A rank-r LoRA adds (alpha / r) * B A to each adapted weight. The best rank-n approximation of B A (in
every unitarily invariant norm) keeps its n largest singular directions; this writes them as a rank-n
LoRA with alpha = n * (alpha / r), so the scale, and the update up to the dropped directions, stay. The
SVD goes through QR factors of B and A^T, so it costs (r x r) work, not (out x in). Asks: does the rank-64
candidate keep its copy when stored at a rank whose release fits the 25 MB the lab keeps releases to?
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lab.storage import atomic_dir, read_manifest

ADAPTER = Path("adapter")


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


def shrink_release(src: str | Path, dst: str | Path, rank: int) -> Path:
    """A copy of the release folder `src` at `dst` whose LoRA has rank `rank` (same scale)."""
    src = Path(src)
    config = json.loads((src / ADAPTER / "adapter_config.json").read_text())
    if not 0 < rank < config["r"]:
        raise ValueError(f"rank={rank}: give a rank between 1 and {config['r'] - 1}, below the adapter's {config['r']}")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{src} sets ranks per module (rank_pattern / alpha_pattern); shrink_release keeps one rank")
    weights = shrink_adapter_weights(load_file(str(src / ADAPTER / "adapter_model.safetensors")), rank)
    metadata = {**(read_manifest(src) or {}).get("metadata", {}), "shrunk_from_rank": config["r"]}
    with atomic_dir(dst, metadata=metadata) as tmp:
        for item in src.iterdir():
            if item.name != "MANIFEST.json":
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        config.update(r=rank, lora_alpha=config["lora_alpha"] * rank / config["r"])
        (tmp / ADAPTER / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(weights, str(tmp / ADAPTER / "adapter_model.safetensors"), metadata={"format": "pt"})
    return Path(dst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src"), p.add_argument("dst")
    p.add_argument("--rank", type=int, required=True)
    args = p.parse_args(argv)
    print(shrink_release(args.src, args.dst, args.rank))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
