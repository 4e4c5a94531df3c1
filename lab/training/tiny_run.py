"""A tiny trained GEM checkpoint in seconds: what notebooks use in QUICK mode and CI runs them with."""

from __future__ import annotations

from pathlib import Path

from ..gem.config import GemConfig
from ..storage import PROJECT_ROOT, cache_dir, folder_problem
from ..weights.registry import DEFAULT_GEM, SHIPPED_GEM
from .config_files import config_from_args
from .loop import train

SHIPPED_LIKE_BASE = "tiny-smollm2"  # SmolLM2's special tokens and no BOS, like the shipped backbone


def shipped_gem_settings() -> dict:
    """The shipped checkpoint's GEM settings (k, sink token, readout, readout head and its width),
    as dotted config keys: read from its gem_config.json, so a change to what ships reaches every
    shipped-like run."""
    shipped = GemConfig.load(SHIPPED_GEM[DEFAULT_GEM])
    return {f"gem.{name}": getattr(shipped, name) for name in ("k", "sink_token", "readout", "readout_head",
                                                                "readout_dim")}


def tiny_gem_checkpoint(folder: str | None = None, steps: int = 6, shipped_like: bool = True) -> str:
    """A tiny trained GEM checkpoint (configs/tiny.yaml on the committed Wikipedia sample, a few
    seconds on CPU): what notebooks use in QUICK mode and what CI runs them with. Returns its path.
    shipped_like: on `tiny-smollm2` with the shipped model's GEM settings (`shipped_gem_settings`),
    so QUICK mode runs what ships; False: configs/tiny.yaml as written (tiny-llama, k = 1).
    Kept under `$GEM_LAB_CACHE/tiny-gem/` by default and reused while complete."""
    root = PROJECT_ROOT
    out = Path(folder) if folder else cache_dir() / "tiny-gem" / f"{'shipped-like-' if shipped_like else ''}steps{steps}"
    done = out / f"checkpoint-{steps}"
    if done.is_dir() and folder_problem(done) is None:
        return str(done)
    cfg = config_from_args(str(root / "configs" / "tiny.yaml"), [])
    cfg = cfg.updated({"rows.corpus": str(root / cfg.rows.corpus), "rows.heldout": str(root / cfg.rows.heldout),
                       "run.output_dir": str(out), "optim.steps": steps, "objective.ntp_steps": steps // 2,
                       "run.save_every": steps})
    if shipped_like:
        cfg = cfg.updated({"model": SHIPPED_LIKE_BASE, **shipped_gem_settings()})
    return str(train(cfg, force=True))  # the lab's own cache: an unfinished run there is replaced
