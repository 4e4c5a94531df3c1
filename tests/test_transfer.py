"""Transfer tasks outside the suite (gensim's WordSim-353, SimLex-999, Pang & Lee polarity)."""

import zlib
import numpy as np
import pytest
import torch

from lab.evaluation.embedders import Embedder
from lab.evaluation.transfer import sentiment_accuracy, transfer_data, transfer_table, word_similarity

from .conftest import tiny_gem


def test_the_sets_load_whole():
    data = transfer_data()
    assert len(data["WordSim-353"]) == 353 and len(data["SimLex-999"]) == 999
    texts, labels = data["Pang-Lee sentiment"]
    assert len(texts) == 200 and sum(labels) == 100, "100 positive, 100 negative sentences"
    assert not any(t.startswith("__label__") for t in texts)


def test_a_label_reading_embedder_is_perfect_and_a_random_one_is_not():
    texts, labels = transfer_data()["Pang-Lee sentiment"]
    truth = dict(zip(texts, labels))
    rng = np.random.default_rng(0)
    oracle = Embedder("oracle", "x", lambda ts: np.array([[truth[t], 1 - truth[t], 0.1] for t in ts], float))
    noise = Embedder("noise", "x", lambda ts: rng.normal(size=(len(ts), 8)))
    assert sentiment_accuracy(oracle, texts, labels) == 1.0
    assert sentiment_accuracy(noise, texts, labels) < 0.7


def test_sentiment_is_the_mean_over_the_splits_of_one_embedding():
    texts, labels = transfer_data()["Pang-Lee sentiment"]
    truth = dict(zip(texts, labels))
    calls = []

    def weak(ts):  # a little of the label in noise, fixed per text: the split decides more
        calls.append(len(ts))
        return np.array([[0.4 * truth[t], *np.random.default_rng(zlib.crc32(t.encode())).normal(size=6)] for t in ts])

    emb = Embedder("weak", "x", weak)
    one = [sentiment_accuracy(emb, texts, labels, seeds=[s]) for s in range(4)]
    assert len(set(one)) > 1, "the split moves the score"
    calls.clear()
    fresh = Embedder("weak, again", "x", weak)
    assert sentiment_accuracy(fresh, texts, labels, seeds=range(4)) == pytest.approx(np.mean(one), abs=1e-12)
    assert calls == [200], "the texts are embedded once, whatever the number of splits"


def test_word_similarity_is_the_rank_correlation_with_the_human_scores():
    pairs = [("a", "b", 1.0), ("c", "d", 2.0), ("e", "f", 3.0)]
    angle = {"a": 0.0, "b": 1.5, "c": 0.0, "d": 1.0, "e": 0.0, "f": 0.2}  # closer pairs: higher score
    emb = Embedder("toy", "x", lambda ws: np.array([[np.cos(angle[w]), np.sin(angle[w])] for w in ws]))
    assert word_similarity(emb, pairs) == pytest.approx(1.0)
    assert "| toy | x | 10.0 | 20.0 | 30.0 | 20.0 |" in transfer_table(
        [("toy", "x", {"WordSim-353": 0.1, "SimLex-999": 0.2, "Pang-Lee sentiment": 0.3})])


def test_sink_probe_pools_only_the_words_tokens_whatever_the_padding():
    from research.sink_words import sink_word_similarity, word_states

    gem = tiny_gem("llama")
    words = ["cat", "a much longer word", "dog"]
    for sink in (None, "<s>"):
        batch = word_states(gem, words, sink, layers=(-1, 1))
        alone = [word_states(gem, [w], sink, layers=(-1, 1)) for w in words]
        for layer in (-1, 1):
            assert batch[layer].shape == (3, gem.hidden_size)
            assert torch.allclose(batch[layer], torch.cat([a[layer] for a in alone]), atol=1e-5), "padding leaks"
    assert not torch.allclose(word_states(gem, words, None, (-1,))[-1], word_states(gem, words, "<s>", (-1,))[-1])
    pairs = {"toy": [("cat", "dog", 3.0), ("cat", "a much longer word", 1.0), ("dog", "a much longer word", 2.0)]}
    rows = sink_word_similarity(gem, pairs, layers=(-1,), sink="<s>")
    assert [(r["sink"], r["layer"]) for r in rows] == [(False, -1), (True, -1)]
    assert all(-1.0 <= r["spearman"] <= 1.0 for r in rows)


def test_with_sink_reads_texts_as_a_model_trained_with_the_sink_does():
    from lab.evaluation.language import text_perplexity
    from research.sink_words import with_sink
    from lab.gem import GemModel
    from lab.gem.config import GemConfig
    from lab.gem.tokens import add_gem_tokens
    from lab.weights.tiny import build_tiny

    model, tok = build_tiny("qwen2")
    add_gem_tokens(model, tok, 1)
    plain = GemModel(model, tok, GemConfig(k=1, trained=True))
    native = GemModel(model, tok, GemConfig(k=1, trained=True, sink_token="<s>"))
    texts = ["the cat sat on the mat", "stocks fell sharply on monday", "a short one"]
    probe = with_sink(plain, "<s>")
    assert probe.bos == native.bos and plain.bos == [], "a copy: the model it came from is unchanged"
    assert text_perplexity(probe, texts) == pytest.approx(text_perplexity(native, texts), rel=1e-6)
    assert text_perplexity(plain, texts) != pytest.approx(text_perplexity(probe, texts), rel=1e-3)
