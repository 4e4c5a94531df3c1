"""The one loader of plain causal LMs: registry names, local HF folders, hub ids (online).

    model, tokenizer = load_causal_lm("smollm2-135m")    # a plain *ForCausalLM in eval mode

Nothing is unpickled and `trust_remote_code` is off unless the caller turns it on.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from ..gem.tokens import prepare_tokenizer
from .conversion import prepare
from .registry import DEFAULT_MODEL, REGISTRY, ModelNotAvailable, get_spec
from .tiny import build_tiny

log = logging.getLogger(__name__)


def resolve_source(name_or_path: str) -> tuple[str, str | Path]:
    """('tiny', arch) | ('folder', path) | ('hub', id) for any accepted model reference."""
    if name_or_path in REGISTRY:
        spec = REGISTRY[name_or_path]
        return ("tiny", spec.tiny_arch) if spec.tiny_arch else ("folder", prepare(name_or_path))
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p} is a folder but has no config.json: not a Hugging Face model folder")
        return "folder", p
    if p.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        get_spec(name_or_path)  # raises the helpful "unknown model" error
    return "hub", name_or_path


def load_causal_lm(
    name_or_path: str = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
):
    """(model, tokenizer): a plain `*ForCausalLM` in eval mode and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, where = resolve_source(name_or_path)
    if kind == "tiny":
        model, tok = build_tiny(where, attn_implementation=attn_implementation)
        return model.to(device=device, dtype=dtype), tok
    if kind == "hub" and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotAvailable(
            f"{name_or_path!r} looks like a hub id, but HF_HUB_OFFLINE=1. Use a registry name "
            f"(`python -m lab models`) or a local folder, or unset HF_HUB_OFFLINE when online."
        )
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        where, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
    ).to(device)
    model.eval()
    prepare_tokenizer(tok)
    log.info("loaded %s in %.2f s", name_or_path, time.perf_counter() - t0)
    return model, tok
