"""The app's model picker: which models it offers, and which names it refuses to load (and why)."""

from __future__ import annotations

import os
from pathlib import Path

from ..storage import PROJECT_ROOT
from ..weights.conversion import list_models
from ..weights.registry import REGISTRY, SHIPPED_GEM


def pickable_problem(name: str, allow_any_folder: bool = False) -> str | None:
    """Why the app's model picker must not load `name`, or None. Allowed: registry names, shipped
    GEM names, folders under the project's checkpoints/ or the working directory (any readable
    folder with `allow_any_folder`: `app.py --allow-any-folder`), and hub ids only when online."""
    if name in REGISTRY or name in SHIPPED_GEM:
        return None
    path = Path(name).expanduser()
    if path.exists():
        where = path.resolve()
        roots = [Path.cwd().resolve(), (PROJECT_ROOT / "checkpoints").resolve()]
        if allow_any_folder or any(where == r or r in where.parents for r in roots):
            return None
        return (f"{name} is outside the working directory and the project's checkpoints/; the picker loads "
                f"only folders there (start the app with --allow-any-folder to allow any folder)")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            return (f"{name} is not a registry name or a folder here, and the app is offline, so it cannot "
                    f"download it; start the app with --online, or pick one of: {', '.join(REGISTRY)}")
        return None
    return (f"unknown model {name!r}: pick a registry name ({', '.join(REGISTRY)}), a shipped GEM model "
            f"({', '.join(SHIPPED_GEM)}) or a checkpoint folder such as runs/NAME/last")


def model_choices(runs_dir: str = "runs") -> tuple[list[str], list[str]]:
    """(base model choices: registry names; GEM choices: shipped names and local training runs)."""
    base = [m["name"] for m in list_models() if m["installed"]]
    runs = sorted(str(p.parent) for p in Path(runs_dir).glob("*/last")) if Path(runs_dir).is_dir() else []
    return base, list(SHIPPED_GEM) + runs
