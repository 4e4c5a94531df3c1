"""Checks for exercises that measure something (a time, a set of samples): the check tells a
measured value from a typed one, so that a made-up number does not pass.

    answer, one_s = ex.timed(lambda: gem.embed_and_generate(doc, question))   # seconds, measured
"""

from __future__ import annotations

import time

import torch

from .verdict import answered, verdict


def distinct_bigrams(texts: list[str]) -> float:
    """Share of distinct word bigrams among all word bigrams of `texts` (distinct-2: 1 = no repeats)."""
    grams = [(a, b) for t in texts for a, b in zip(t.split(), t.split()[1:])]
    return len(set(grams)) / len(grams) if grams else 0.0


class Seconds(float):
    """A duration that `timed` measured (a check can tell it from a number typed in)."""


def timed(fn):
    """(fn(), Seconds it took): the way exercises time things."""
    t = time.perf_counter()
    out = fn()
    return out, Seconds(time.perf_counter() - t)


def check_one_prefill_faster(one_s: float, two_s: float, document_tokens: int) -> bool:
    """6.2 — one prefill (embed + answer) against embedding then generating, on a long document, both
    times measured with `timed`. It accepts a proper measurement and says what it shows (on a busy
    or tiny machine the saving can vanish in noise: that is a finding, not a wrong answer)."""
    if not answered(one_s, two_s, document_tokens):
        return False
    if not (isinstance(one_s, Seconds) and isinstance(two_s, Seconds)):
        return verdict(False, "", "measure both times with ex.timed(lambda: ...): typed-in numbers do not count")
    if document_tokens < 200:
        return verdict(False, "", f"{document_tokens} tokens is too short to see the saving: use doc * 5 (or longer)")
    ratio = two_s / max(one_s, 1e-9)
    finding = ("the document is read once, not twice" if ratio > 1.05 else
               "no saving measured: the fixed costs (the answer's decode, Python) dominate here; try a longer document")
    return verdict(True, f"×{ratio:.2f} on {document_tokens} tokens ({one_s:.3f} s vs {two_s:.3f} s): {finding}", "")


def sampled(model, prompt: str, n: int = 5, seed: int = 0, **generate_kwargs) -> list[str]:
    """`n` sampled continuations of `prompt`, after torch.manual_seed(seed) (temperature 0.8, 30 new
    tokens unless given): what exercise 6.3 asks for, reproducibly."""
    kwargs = {"do_sample": True, "temperature": 0.8, "max_new_tokens": 30, **generate_kwargs}
    torch.manual_seed(seed)
    return [model.generate(prompt, **kwargs) for _ in range(n)]


def check_sampled(model, prompt: str, samples: list[str], answer: float) -> bool:
    """6.3 — five continuations sampled from `model` after torch.manual_seed(0) (the check samples
    them again: made-up texts do not pass) and their distinct-2."""
    if not answered(samples, answer):
        return False
    if list(samples) != sampled(model, prompt, len(samples)):
        return verdict(False, "", "sample each model right after torch.manual_seed(0): model.generate(prompt, "
                        "do_sample=True, temperature=0.8, max_new_tokens=30), five times")
    truth = distinct_bigrams(samples)
    return verdict(abs(answer - truth) <= 1e-3, f"distinct-2 = {truth:.3f} over {len(samples)} samples",
                    f"you have {answer:.3f}: count distinct (word, next word) pairs over all pairs of all samples")
