"""GGUF -> cached HF folder: the one-time conversion of a registry model, and the cache checks.

The first load of an offline model converts its GGUF (dequantized to fp32 safetensors + tokenizer)
into `$GEM_LAB_CACHE/models/NAME`; the folder is written atomically and checked on every load, so
an interrupted conversion is never loaded half-written and a damaged one is rebuilt.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from pathlib import Path

import torch

from ..storage import atomic_dir, folder_problem, read_manifest, remove_stale_temporaries
from .registry import (CONVERSION_VERSION, DEFAULT_GEM, DEFAULT_MODEL, REGISTRY, SHIPPED_GEM, ModelNotAvailable, ModelSpec,
                       get_spec, sha256_of)

log = logging.getLogger(__name__)


def _strip_gguf_quantizer(model) -> None:
    """A GGUF-loaded model is dequantized but still flagged as quantized, which blocks
    `save_pretrained` and training; after dequantization the flag is just wrong, so drop it."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if attr in model.__dict__:
            delattr(model, attr)


def convert_gguf_to_hf(spec: ModelSpec, out_dir: Path) -> None:
    """Dequantize the spec's GGUF into `out_dir` as a plain HF checkpoint (fp32 safetensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = spec.gguf(out_dir)
    if spec.sha256 is not None:
        digest = sha256_of(gguf_path)
        if digest != spec.sha256:
            raise RuntimeError(
                f"{gguf_path} has sha256 {digest}, expected {spec.sha256}: the package is damaged "
                f"or a different version. Reinstall it: {spec.install}"
            )
    src_dir, fname = gguf_path.parent, gguf_path.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=torch.float32)
    _strip_gguf_quantizer(model)
    if gguf_path.parent == out_dir:
        gguf_path.unlink()  # an assembled temporary, not part of the checkpoint
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def _metadata(spec: ModelSpec) -> dict:
    return {"name": spec.name, "conversion_version": CONVERSION_VERSION, "sha256": spec.sha256}


def cache_problem(spec: ModelSpec) -> str | None:
    """Why the spec's cached HF folder cannot be used, or None when it is complete and current."""
    problem = folder_problem(spec.cached_dir)
    if problem:
        return problem
    meta = read_manifest(spec.cached_dir).get("metadata", {})
    if meta.get("conversion_version") != CONVERSION_VERSION:
        return f"{spec.cached_dir} was made by an older conversion recipe"
    for st in spec.cached_dir.glob("*.safetensors"):
        if not _safetensors_header_ok(st):
            return f"{st} has a damaged header"
    return None


def _safetensors_header_ok(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or n > 100_000_000:
                return False
            header = json.loads(f.read(n))
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, struct.error):
        return False


def prepare(name: str, force: bool = False) -> Path:
    """The local HF folder of registry model `name`, converting (once) if needed."""
    spec = get_spec(name)
    if spec.tiny_arch:
        raise ValueError(f"{name} is built in code and has no folder; use load_causal_lm({name!r})")
    problem = None if force else cache_problem(spec)
    if not force and problem is None:
        return spec.cached_dir
    if not spec.installed:
        raise ModelNotAvailable(
            f"model {name!r} needs packages that are not installed. Install them with:\n    {spec.install}"
        )
    if not force and spec.cached_dir.exists():
        log.warning("cache for %s is unusable (%s); rebuilding it", name, problem)
    remove_stale_temporaries(spec.cached_dir.parent)
    log.info("converting %s from GGUF to a cached HF folder (once; ~15-60 s) ...", name)
    t0 = time.perf_counter()
    with atomic_dir(spec.cached_dir, metadata=_metadata(spec), replace_foreign=True) as tmp:  # the lab's own cache
        (spec.builder or convert_gguf_to_hf)(spec, tmp)
    log.info("converted %s in %.1f s -> %s", name, time.perf_counter() - t0, spec.cached_dir)
    return spec.cached_dir


def list_models() -> list[dict]:
    """One dict per registry model: name, description, licence, installed, cached, install."""
    rows = []
    for spec in REGISTRY.values():
        rows.append({
            "name": spec.name,
            "description": spec.description,
            "licence": spec.licence,
            "installed": spec.tiny_arch is not None or spec.installed,
            "cached": spec.tiny_arch is not None or cache_problem(spec) is None,
            "install": spec.install,
            "default": spec.name == DEFAULT_MODEL,
        })
    return rows


def list_gem_models() -> list[dict]:
    """One dict per shipped GEM checkpoint (`lab.load(name)`): name, description (its card's title),
    base (the registry model it is built on), present (the checkpoint folder is there), ready (present
    and its base installed), install (what makes the base available), default."""
    rows = []
    for name, path in SHIPPED_GEM.items():
        config = path / "gem_config.json"
        base = json.loads(config.read_text()).get("base_model") if config.is_file() else None
        spec = REGISTRY.get(base)
        card = path / "README.md"
        title = card.read_text(encoding="utf-8").split("\n", 1)[0].lstrip("# ").strip() if card.is_file() else ""
        rows.append({"name": name, "description": title, "base": base, "present": config.is_file(),
                     "ready": config.is_file() and spec is not None and spec.installed,
                     "install": spec.install if spec else "",
                     "default": name == DEFAULT_GEM})
    return rows
