"""What the evaluation embeds with: a GemModel with one pooling, or a sentence-transformers encoder.

Both become an `Embedder` (name + `embed(texts) -> (n, d)` unit-norm float32), and `MtebEncoder`
adapts any Embedder to mteb's encoder protocol. Embeddings are memoised per text inside one run,
so a text that several tasks share (an article in classification, retrieval and pairs) is
embedded once.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from ..weights.encoders import load_encoder

log = logging.getLogger(__name__)

class Embedder:
    """`embed(texts) -> (n, d)` float32, unit norm, memoised by text."""

    def __init__(self, name: str, pooling: str, embed_fn: Callable[[list[str]], np.ndarray]):
        self.name, self.pooling = name, pooling
        self._embed_fn = embed_fn
        self._memo: dict[str, np.ndarray] = {}
        self.texts_embedded = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            vecs = np.asarray(self._embed_fn(todo), dtype=np.float32)
            vecs /= np.linalg.norm(vecs, axis=-1, keepdims=True).clip(1e-12)
            self._memo.update(zip(todo, vecs))
            self.texts_embedded += len(todo)
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)


def gem_embedder(gem, pooling: str, batch_size: int = 16, max_length: int | None = None) -> Embedder:
    """A GemModel read out with `pooling` ("gem", "mean", "last", "prompteol", "echo")."""
    gem.check_pooling(pooling)
    return Embedder(gem.name, pooling, lambda texts: gem.encode(
        texts, pooling=pooling, batch_size=batch_size, max_length=max_length, show_progress_bar=False))


def sentence_transformer_embedder(name: str, batch_size: int = 32) -> Embedder:
    """A dedicated sentence encoder from ENCODERS (offline), or any sentence-transformers folder."""
    model = load_encoder(name)
    return Embedder(name, "encoder", lambda texts: model.encode(
        texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False))


class MtebEncoder:
    """mteb's encoder protocol over an Embedder (mteb needs `mteb_model_meta`, or it skips encoding)."""

    def __init__(self, embedder: Embedder):
        from mteb.models.model_meta import ModelMeta

        self.embedder = embedder
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{embedder.name}-{embedder.pooling}")
        self.mteb_model_meta = ModelMeta.create_empty(overwrites={"name": f"gem-lab/{safe}", "revision": "0"})

    def encode(self, inputs, *, task_metadata=None, hf_split=None, hf_subset=None, prompt_type=None, **kwargs):
        texts = [t for batch in inputs for t in batch["text"]]
        return self.embedder.embed(texts)

    @staticmethod
    def similarity(a, b):
        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T

    @staticmethod
    def similarity_pairwise(a, b):
        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        return (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)).sum(-1)
