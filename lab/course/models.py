"""What the notebooks share: which models to load, in full or QUICK mode.

    base, gem = course.models(QUICK)

QUICK = False: the offline default model (SmolLM2-135M) and the shipped GEM checkpoint.
QUICK = True: a tiny random model built in code and a GEM checkpoint trained from it in seconds,
configured like the shipped one (`tiny-smollm2`: no BOS; the shipped k, sink token and readout
head): what CI runs every notebook with; the numbers are meaningless, the code paths are the same.
"""

from __future__ import annotations

from functools import lru_cache

from ..weights import DEFAULT_GEM, DEFAULT_MODEL, load
from ..training.tiny_run import SHIPPED_LIKE_BASE, tiny_gem_checkpoint


@lru_cache(maxsize=2)
def model_names(quick: bool) -> tuple[str, str]:
    """(base model name, GEM checkpoint name or folder)."""
    if quick:
        return SHIPPED_LIKE_BASE, tiny_gem_checkpoint()
    return DEFAULT_MODEL, DEFAULT_GEM


def models(quick: bool):
    """(base GemModel, GEM GemModel), in fp32 on every machine: the notebooks' printed numbers and
    their checks (e.g. notebook 1's leak check at 1e-3 of the logits) assume fp32, which `lab.load`
    would not pick on a CPU with native bf16."""
    base_name, gem_name = model_names(quick)
    return load(base_name, dtype="float32"), load(gem_name, dtype="float32")
