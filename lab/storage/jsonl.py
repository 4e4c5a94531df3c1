"""JSON lines: one JSON object per line (the lab's corpora and held-out sets)."""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: str | Path) -> list[dict]:
    """Every non-blank line of `path` parsed as JSON; a missing file names what builds it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the lab's data with `make data` "
                                f"(or `python -m lab data build`), or pass an existing .jsonl file")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
