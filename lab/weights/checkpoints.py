"""GEM checkpoints: small folders that load with `lab.load(path)`.

    gem_config.json          GemConfig (k, readout, base model, ...)
    config.json + weights    only in merged exports (lab.export): the whole model, no base needed
    gem_tokens.safetensors   the k new input-embedding rows (and output rows if the head is untied)
    readout_head.safetensors optional: the readout head (GemConfig.readout_head; lab.gem.readout)
    adapter/                 optional: a peft LoRA adapter (adapter_config.json + safetensors)
    weights.safetensors      optional: full fine-tuned weights that differ from the base
    MANIFEST.json            written last: a folder without it is unfinished and is never loaded

The base model's weights are not copied: they come from the registry (or folder) named in the
config. Everything is safetensors + JSON; nothing is unpickled.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from ..gem import GemConfig, GemModel
from ..gem.forward import unwrap
from ..gem.readout import HEAD_FILE
from ..gem.tokens import add_gem_tokens
from ..storage import atomic_dir, folder_problem, load_safetensors
from .causal_lm import load_causal_lm

log = logging.getLogger(__name__)

TOKENS_FILE = "gem_tokens.safetensors"
WEIGHTS_FILE = "weights.safetensors"
ADAPTER_DIR = "adapter"


def gem_token_tensors(gem: GemModel) -> dict[str, torch.Tensor]:
    """The GEM rows of the input (and untied output) embedding, (k, d) float32."""
    base = unwrap(gem.model)
    ids = torch.tensor(gem.special_ids)
    out = {"input_rows": base.get_input_embeddings().weight.detach()[ids].float().cpu().contiguous()}
    head = base.get_output_embeddings()
    if head is not None and head.weight is not base.get_input_embeddings().weight:
        out["output_rows"] = head.weight.detach()[ids].float().cpu().contiguous()
    return out


def untied(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a state dict with shared storage kept once (tied embedding / LM head);
    loading re-ties them, since the model's own tie survives `load_state_dict(strict=False)`."""
    out, seen = {}, set()
    for name, t in weights.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().cpu().contiguous()
    return out


def save_checkpoint(gem: GemModel, folder: str | Path, full_weights: dict[str, torch.Tensor] | None = None,
                    metadata: dict | None = None, extra: Callable[[Path], None] | None = None) -> Path:
    """Write `gem` to `folder` atomically (replacing an older checkpoint there only on success).
    `extra(tmp_folder)` may add files (training state) before the folder is sealed."""
    if gem.gem_config is None:
        raise ValueError("save_checkpoint needs a model with GEM tokens (see lab.gem.add_new_gem_tokens)")
    folder = Path(folder)
    with atomic_dir(folder, metadata=metadata) as tmp:
        gem.gem_config.save(tmp)
        save_file(gem_token_tensors(gem), str(tmp / TOKENS_FILE))
        if gem.readout_head is not None:
            gem.readout_head.save(tmp)
        if hasattr(gem.model, "peft_config"):
            # The new token rows are in TOKENS_FILE; without save_embedding_layers=False peft would
            # also save the whole resized embedding matrix and LM head (~230 MB for SmolLM2).
            gem.model.save_pretrained(tmp / ADAPTER_DIR, safe_serialization=True, save_embedding_layers=False)
        if full_weights:
            save_file(untied(full_weights), str(tmp / WEIGHTS_FILE))
        if extra is not None:
            extra(tmp)
    return folder


def load_token_rows(model, ids: list[int], folder: Path) -> None:
    """Copy a checkpoint's GEM embedding rows (and untied output rows) into `model`, if it has them."""
    if not (Path(folder) / TOKENS_FILE).is_file():
        return
    rows = load_safetensors(Path(folder) / TOKENS_FILE)
    base = unwrap(model)
    saved = tuple(rows["input_rows"].shape)
    wanted = (len(ids), base.get_input_embeddings().weight.shape[1])
    if saved != wanted:
        raise ValueError(f"{Path(folder) / TOKENS_FILE} holds {saved[0]} GEM rows of width {saved[1]}, but its "
                         f"{Path(folder) / 'gem_config.json'} asks for k = {wanted[0]} on a model of width {wanted[1]}: "
                         f"the config's k or base_model does not match the saved weights")
    with torch.no_grad():
        emb = base.get_input_embeddings().weight
        emb[ids] = rows["input_rows"].to(emb.dtype)
        if "output_rows" in rows:
            head = base.get_output_embeddings().weight
            head[ids] = rows["output_rows"].to(head.dtype)


def load_checkpoint(folder: str | Path, dtype=torch.float32, device="cpu", attn_implementation="sdpa",
                    merge_adapter: bool = True) -> GemModel:
    """A `GemModel` from a folder written by `save_checkpoint`."""
    folder = Path(folder)
    problem = folder_problem(folder, content=True)
    if problem:
        raise RuntimeError(f"cannot load GEM checkpoint: {problem}. Re-export or re-train it (a shipped "
                           f"checkpoint: git checkout -- {folder})")
    cfg = GemConfig.load(folder)
    if not cfg.readout_head and (folder / HEAD_FILE).is_file():
        raise RuntimeError(f"{folder} holds {HEAD_FILE} but its {GemConfig.FILENAME} says readout_head: false, so "
                           f"the embedding would skip the head; set readout_head: true (and readout_dim) there")
    # A merged export holds the whole model (config.json); a training checkpoint names its base.
    base = str(folder) if (folder / "config.json").is_file() else cfg.base_model
    model, tok = load_causal_lm(base, dtype=torch.float32, device="cpu", attn_implementation=attn_implementation)
    ids = add_gem_tokens(model, tok, cfg.k)
    if (folder / WEIGHTS_FILE).is_file():
        missing, unexpected = model.load_state_dict(load_safetensors(folder / WEIGHTS_FILE), strict=False)
        if unexpected:
            raise RuntimeError(f"{folder / WEIGHTS_FILE} has weights this model lacks: {unexpected[:5]}")
    load_token_rows(model, ids, folder)
    if (folder / ADAPTER_DIR).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, folder / ADAPTER_DIR)
        if merge_adapter:
            model = model.merge_and_unload()
    model = model.to(device=device, dtype=dtype)
    model.eval()
    gem = GemModel(model, tok, cfg, name=str(folder))
    if gem.readout_head is not None:
        gem.readout_head.load(folder)
        gem.readout_head.eval()
    return gem


def resolve_run(path: str | Path) -> Path:
    """A checkpoint folder from what users type: the folder itself, a run folder (its newest
    checkpoint, named in the run's `last` file), or that `last` file."""
    path = Path(path)
    pointer = path if path.name == "last" and path.is_file() else path / "last"
    if pointer.is_file() and not (path / "gem_config.json").is_file():
        name = pointer.read_text().strip()
        target = pointer.parent / name
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"{pointer} names {name!r}, which is not a checkpoint folder of this run; pass a checkpoint folder")
        if not target.is_dir():
            raise FileNotFoundError(f"{pointer} names {target.name}, which is missing; pass a checkpoint folder")
        return target
    return path
