"""Weight interpolation between two stages of one GEM model (WiSE-FT / model soups, Wortsman et al. 2022):
the checkpoint whose weights are `(1 - t) * start + t * end`, written exactly as a GEM checkpoint.

Both stages are the same base with a LoRA adapter of one rank r (stage 3 continued stage 2's adapter),
so the weights differ only in the adapter's update, the special tokens' input rows and the readout head.
The update of a LoRA layer is `s * B @ A` (s = alpha / r); `(1 - t) s B0 A0 + t s B1 A1` is itself a LoRA
update of rank 2r: `B = [(1 - t) B0, t B1]`, `A = [A0; A1]`, with alpha doubled so s stays. So the blend is
exact, loads like any checkpoint and is at most twice the adapter's size. The tokens' rows and the
head are blended directly.

    python -m research.reconstruction.interpolate gem-smollm2-135m-anchored gem-smollm2-135m-stop --t 0.5 \
        --out runs/blend-0.5
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lab.gem import GemConfig
from lab.gem.readout import HEAD_FILE
from lab.storage import atomic_dir, folder_problem
from lab.weights.checkpoints import ADAPTER_DIR, TOKENS_FILE, WEIGHTS_FILE, resolve_run
from lab.weights.loading import local_path

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's names inside ADAPTER_DIR
ADAPTER_CONFIG = "adapter_config.json"
BLENDED = (TOKENS_FILE, HEAD_FILE)  # averaged where the checkpoints have them
KEPT = (GemConfig.FILENAME, "train_config.json")  # copied from the end stage


def blended_lora(start: dict, end: dict, t: float) -> dict:
    """The rank-2r LoRA tensors whose update is (1 - t) * start's + t * end's, for adapters of one rank
    and one set of layers (lora_A: (r, in), lora_B: (out, r); the result (2r, in) and (out, 2r))."""
    if start.keys() != end.keys():
        raise ValueError("the two adapters train different layers: only stages of one model can be blended")
    out = {}
    for name, a in start.items():
        b = end[name]
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")
        if ".lora_A." in name:
            out[name] = torch.cat([a, b], dim=0)
        elif ".lora_B." in name:
            out[name] = torch.cat([(1 - t) * a.float(), t * b.float()], dim=1).to(a.dtype)
        else:
            raise ValueError(f"{name}: not a LoRA A or B matrix (bias or saved module): not supported")
    return out


def blended_config(config: dict) -> dict:
    """The adapter config for the rank-2r blend: the same scale alpha / r."""
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("use_rslora") or config.get("use_dora"):
        raise ValueError("blending supports plain LoRA adapters (no rank / alpha patterns, rsLoRA or DoRA)")
    return {**config, "r": 2 * config["r"], "lora_alpha": 2 * config["lora_alpha"]}


def write_blend(start: str, end: str, t: float, out: Path) -> Path:
    """Write the checkpoint with weights (1 - t) * start + t * end to `out` (a sealed GEM folder)."""
    a, b = resolve_run(local_path(start)), resolve_run(local_path(end))
    for path in (a, b):
        problem = folder_problem(path, content=True)
        if problem:
            raise ValueError(problem)
        if (path / WEIGHTS_FILE).is_file() or not (path / ADAPTER_DIR / ADAPTER_CONFIG).is_file():
            raise ValueError(f"{path} is not a LoRA checkpoint (a full fine-tune or a merged export): only two "
                             f"LoRA stages of one model can be blended")
    if GemConfig.load(a) != GemConfig.load(b):
        raise ValueError(f"{GemConfig.FILENAME} differs between {a} and {b}: not two stages of one model")
    config = json.loads((b / ADAPTER_DIR / ADAPTER_CONFIG).read_text())
    if json.loads((a / ADAPTER_DIR / ADAPTER_CONFIG).read_text())["r"] != config["r"]:
        raise ValueError("the adapters' ranks differ")
    with atomic_dir(out, metadata={"kind": "blend", "start": str(a), "end": str(b), "t": t}) as tmp:
        (tmp / ADAPTER_DIR).mkdir()
        save_file(blended_lora(load_file(a / ADAPTER_DIR / ADAPTER_WEIGHTS), load_file(b / ADAPTER_DIR / ADAPTER_WEIGHTS), t),
                  tmp / ADAPTER_DIR / ADAPTER_WEIGHTS)
        (tmp / ADAPTER_DIR / ADAPTER_CONFIG).write_text(json.dumps(blended_config(config), indent=2))
        for name in (n for n in BLENDED if (b / n).is_file()):
            x, y = load_file(a / name), load_file(b / name)
            save_file({k: ((1 - t) * x[k].float() + t * y[k].float()).to(x[k].dtype) for k in x}, tmp / name)
        for name in KEPT:
            if (b / name).is_file():
                shutil.copy(b / name, tmp / name)
        (tmp / "blend.json").write_text(json.dumps({"start": str(a), "end": str(b), "t": t}, indent=2))
    log.info("wrote %s: %.2f x %s + %.2f x %s", out, 1 - t, a, t, b)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("start", help="a GEM checkpoint: shipped name, folder or run")
    p.add_argument("end", help="a later stage of the same model (the same adapter's rank and layers)")
    p.add_argument("--t", type=float, required=True, help="0 = start, 1 = end")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_blend(args.start, args.end, args.t, Path(args.out))


if __name__ == "__main__":
    main()
