"""Where things live on disk: the lab's cache folder and installed asset packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

CACHE_ENV = "GEM_LAB_CACHE"
# The project folder (configs/, data/, checkpoints/ live here; the lab is installed editable).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
