"""Embedding maps: embeddings and their 2-D UMAP projection, cached on disk by content.

    emb, coords = embedding_map(gem, textset, pooling="gem")

The cache key is (model identity, pooling, max length, the text set's sha256, UMAP settings), the
file is `$GEM_LAB_CACHE/maps/<key>.npz`, written atomically, so a second request for the same map
is a file read, and an interrupted write leaves no half file. The cache is bounded: past
`MAX_MAP_CACHE_BYTES` the least recently used maps are deleted. UMAP runs with a fixed seed, so a
map is the same on every run (UMAP with a seed is single-threaded, hence deterministic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np

from ..corpora.textsets import TextSet
from ..storage import atomic_file, cache_dir

log = logging.getLogger(__name__)

UMAP_DEFAULTS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "random_state": 42}
MAX_MAP_CACHE_BYTES = int(os.environ.get("GEM_LAB_MAP_CACHE_MB", "256")) * 2**20


def evict_maps(folder, keep_bytes: int = MAX_MAP_CACHE_BYTES) -> int:
    """Delete the least recently used `*.npz` maps of `folder` until they total <= keep_bytes (the
    newest is always kept); returns how many were deleted. A read refreshes a map's time."""
    from pathlib import Path

    files = []
    for f in Path(folder).glob("*.npz"):
        try:
            st = f.stat()
        except FileNotFoundError:  # another process evicted it
            continue
        files.append((st.st_mtime, st.st_size, f))
    files.sort(reverse=True)  # newest first
    total, deleted = 0, 0
    for i, (_, size, f) in enumerate(files):
        total += size
        if i > 0 and total > keep_bytes:
            f.unlink(missing_ok=True)
            deleted += 1
    return deleted


def model_identity(gem) -> str:
    """A string that changes when the weights a name points to change (checkpoint manifest)."""
    from pathlib import Path

    ident = gem.name
    manifest = Path(str(gem.name)) / "MANIFEST.json"
    if manifest.is_file():
        ident += ":" + hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    return ident


def project_2d(emb: np.ndarray, **umap_kwargs) -> np.ndarray:
    """(n, 2) UMAP of `emb` (cosine, seeded); tiny sets (n < 5) fall back to PCA."""
    settings = {**UMAP_DEFAULTS, **umap_kwargs}
    n = len(emb)
    if n < 5:
        centred = emb - emb.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[:2].T
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))).astype(np.float32)
    import warnings

    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))  # JIT once per machine, not per run
    import umap

    settings["n_neighbors"] = min(settings["n_neighbors"], n - 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        return umap.UMAP(n_components=2, **settings).fit_transform(emb).astype(np.float32)


def warm_up() -> None:
    """Compile UMAP's numba kernels on a tiny input (the first real map is then not a JIT wait)."""
    project_2d(np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))


def embedding_map(gem, textset: TextSet, pooling: str | None = None, max_length: int | None = None,
                  use_cache: bool = True, **umap_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """((n, d) unit embeddings, (n, 2) UMAP coordinates) of `textset` under `gem` + `pooling`."""
    pooling = gem.check_pooling(pooling)
    identity = [model_identity(gem), pooling, max_length or gem.max_length, str(gem.dtype)]
    return _cached_map(identity, textset, lambda texts: gem.encode(texts, pooling=pooling, max_length=max_length,
                                                                    show_progress_bar=False), use_cache, umap_kwargs)


def encoder_map(name: str, textset: TextSet, use_cache: bool = True, **umap_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """`embedding_map` for a sentence encoder of `lab.weights.encoders.ENCODERS` (e.g. "minilm", the
    teacher GEM's readout is distilled towards): its own unit embeddings and their UMAP map."""
    from ..weights.encoders import load_encoder

    def embed(texts):
        return load_encoder(name).encode(texts, normalize_embeddings=True, show_progress_bar=False)
    return _cached_map(["encoder", name], textset, embed, use_cache, umap_kwargs)


def _cached_map(identity: list, textset: TextSet, embed, use_cache: bool, umap_kwargs: dict):
    """(embeddings, coords) from the map cache, keyed on the model's `identity`, the texts and the
    UMAP settings; else `embed(texts)` projected, and cached (atomically, LRU-evicted)."""
    settings = {**UMAP_DEFAULTS, **umap_kwargs}
    key_src = json.dumps([*identity, textset.key(), settings], sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:32]
    path = cache_dir() / "maps" / f"{key}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path) as z:
                emb, coords = z["embeddings"], z["coords"]
            os.utime(path)  # recently used: evicted last
            return emb, coords
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable map cache %s", path)
    emb = np.asarray(embed(textset.texts), dtype=np.float32)
    coords = project_2d(emb, **umap_kwargs)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            np.savez(f, embeddings=emb, coords=coords)
        evict_maps(path.parent)
    return emb, coords


def top_k(query_emb: np.ndarray, emb: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """[(index, cosine)] of the k rows of `emb` nearest to `query_emb` (both unit-norm)."""
    scores = emb @ query_emb
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]
