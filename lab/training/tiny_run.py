"""A tiny trained GEM checkpoint in seconds: what notebooks use in QUICK mode and CI runs them with."""

from __future__ import annotations

from pathlib import Path

from ..storage import PROJECT_ROOT, cache_dir, folder_problem
from .config_files import config_from_args
from .loop import train


def tiny_gem_checkpoint(folder: str | None = None, steps: int = 6) -> str:
    """A tiny trained GEM checkpoint (configs/tiny.yaml on the committed Wikipedia sample, a few
    seconds on CPU): what notebooks use in QUICK mode and what CI runs them with. Returns its path.
    Kept under `$GEM_LAB_CACHE/tiny-gem/` by default and reused while complete."""
    root = PROJECT_ROOT
    out = Path(folder) if folder else cache_dir() / "tiny-gem" / f"steps{steps}"
    done = out / f"checkpoint-{steps}"
    if done.is_dir() and folder_problem(done) is None:
        return str(done)
    cfg = config_from_args(str(root / "configs" / "tiny.yaml"), [])
    cfg = cfg.updated({"rows.corpus": str(root / cfg.rows.corpus), "rows.heldout": str(root / cfg.rows.heldout),
                       "run.output_dir": str(out), "optim.steps": steps, "objective.ntp_steps": steps // 2,
                       "run.save_every": steps})
    return str(train(cfg, force=True))  # the lab's own cache: an unfinished run there is replaced
