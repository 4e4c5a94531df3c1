"""Argument checks shared by GemModel's entry points: a bad argument is an error that names it."""

from __future__ import annotations


def check_texts(name: str, value, allow_empty: bool) -> None:
    """A string or a list / tuple of strings (non-empty unless allowed), or a TypeError that says so."""
    if isinstance(value, str):
        return
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{name} is an empty list: give at least one string")
    bad = [type(t).__name__ for t in value if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must hold strings only, got {bad[0]} (not str)")


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_encode_args(texts, batch_size, max_length) -> None:
    check_positive_int("batch_size", batch_size)
    if max_length is not None:
        check_positive_int("max_length", max_length)
    check_texts("texts", texts, allow_empty=True)


def check_k(k, available: int) -> None:
    """k GEM tokens to show: 0 (the plain causal model) up to the model's own."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be 0 (the plain causal model) or a number of GEM tokens up to {available}, got {k!r}")
    if k > available:
        raise ValueError(f"k={k} but this model has {available} GEM tokens")
