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


def matmul_flops(dtype: torch.dtype, n: int | None = None, seconds: float = 2.0, device="cpu") -> float:
    """Measured matrix-product rate (FLOP/s) for n x n products in `dtype` on `device` (n: 1,024 on
    a CPU, 8,192 on a GPU, large enough to reach its peak)."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def non_embedding_params(model) -> int:
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb
