"""`load`: a `GemModel` from anything a user may name (the lab's public entry point).

    gem = load("smollm2-135m")          # a base model (mean / last / prompteol / echo pooling)
    gem = load("gem-smollm2-135m")      # the shipped GEM checkpoint (pooling="gem" too)
    gem = load("runs/my-run/last")      # the newest checkpoint of a training run
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..gem import GemConfig, GemModel
from .causal_lm import load_causal_lm
from .checkpoints import load_checkpoint, resolve_run
from .dtypes import as_dtype, default_dtype
from .registry import DEFAULT_MODEL, SHIPPED_GEM, shipped_gem_path


# files of a checkpoint folder that describe the weights rather than being them: editing a model card
# (and resealing its manifest) keeps the fingerprint, so results measured on the weights stay reused
NOT_WEIGHTS = {"README.md", "MANIFEST.json", "metrics.jsonl"}


def weights_fingerprint(name_or_path: str) -> str:
    """A short digest that changes when the weights behind a name change: for a local folder (a GEM
    checkpoint, a run, a shipped name, an HF folder) each file's path, size and modification time,
    but for the card, manifest and training log (`NOT_WEIGHTS`); for anything else (a registry or hub
    name) the name itself. Used to key resumable results, so that a re-trained or re-exported model
    never resumes another model's partial results."""
    import hashlib

    name = str(name_or_path)
    if name in SHIPPED_GEM:
        name = str(SHIPPED_GEM[name])
    path = Path(name).expanduser()
    if not path.exists():
        return name
    path = resolve_run(path).resolve()
    files = sorted(f for f in (path.rglob("*") if path.is_dir() else [path])
                   if f.is_file() and not (path.is_dir() and f.name in NOT_WEIGHTS))
    stats = [(str(f.relative_to(path) if path.is_dir() else f.name), f.stat().st_size, f.stat().st_mtime_ns)
             for f in files]
    return hashlib.sha256(repr((str(path), stats)).encode()).hexdigest()[:16]


def local_path(name_or_path: str | Path) -> Path:
    """The local folder a user's name points to: a shipped GEM checkpoint's folder for its name (an
    error with the command that makes it when missing), a run's newest checkpoint for a run folder,
    else the path as typed (which may not exist: a registry or hub name)."""
    name = str(name_or_path)
    if name in SHIPPED_GEM:
        return shipped_gem_path(name)
    return resolve_run(Path(name).expanduser())


def load(name_or_path: str = DEFAULT_MODEL, dtype=None, device: str | None = None,
         attn_implementation: str = "sdpa") -> GemModel:
    """A `GemModel` from a registry name, an HF folder, a hub id (online), a GEM checkpoint folder
    (or a training run: its newest checkpoint, also as `runs/NAME/last`), or the name of a shipped
    GEM checkpoint ("gem-smollm2-135m")."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but this torch ({torch.__version__}) sees no CUDA device; "
                         f"use device='cpu' (or leave device unset to pick one)")
    dtype = as_dtype(dtype) if dtype is not None else default_dtype(device)
    path = local_path(name_or_path)  # a shipped name's folder always holds a GEM checkpoint
    if (path / GemConfig.FILENAME).is_file():
        return load_checkpoint(path, dtype=dtype, device=device, attn_implementation=attn_implementation)
    model, tok = load_causal_lm(str(name_or_path), dtype=dtype, device=device,
                                attn_implementation=attn_implementation)
    return GemModel(model, tok, None, name=str(name_or_path))
