"""Shared helpers for benchmarks: a fixed text set, timing, and a matmul roofline."""

from __future__ import annotations

import re
import statistics
import time

import torch

from lab.storage import package_dir


def news_sentences(n: int = 1000) -> list[str]:
    """n real English sentences from gensim's Lee background corpus (Australian news, in the wheel)."""
    path = package_dir("gensim") / "test" / "test_data" / "lee_background.cor"
    sents = []
    for doc in open(path, encoding="latin-1"):
        sents += [s.strip() for s in re.split(r"(?<=[.!?])\s+", doc) if len(s.split()) >= 4]
    if len(sents) < n:
        sents = (sents * (n // len(sents) + 1))
    return sents[:n]


def best_of(fn, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` runs after `warmup` runs, seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_flops(dtype: torch.dtype, n: int = 1024, seconds: float = 2.0) -> float:
    """Measured matrix-product rate (FLOP/s) for n x n products in `dtype` on this machine."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t)


def non_embedding_params(model) -> int:
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb
