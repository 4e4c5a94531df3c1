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
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{path} is damaged at line {n}: not valid JSON ({e}); rebuild it "
                                     f"(`make data` for the lab's own files) or fix that line") from None
    return rows


def read_json(path: str | Path) -> dict:
    """One JSON file; a damaged one raises a ValueError that names the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is damaged: not UTF-8 text ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path} is damaged: not valid JSON ({e})") from None


def load_safetensors(path: str | Path) -> dict:
    """The tensors of a .safetensors file; a damaged one raises a ValueError that names the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path} is damaged: not a readable safetensors file ({e})") from None
