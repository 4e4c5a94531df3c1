"""Beam-search reconstruction (`reconstruct(num_beams=...)`): the search finds what exhaustive search
finds when nothing is pruned, beats greedy where greedy's first choice leads nowhere, and on a model
its batched, reordered S cache gives the same log-probabilities as decoding each hypothesis alone."""

import dataclasses
import itertools
import json
import math

import pytest
import torch

import lab.gem.beam
import lab.gem.model
from lab.gem import GemConfig
from lab.gem.beam import beam_from_cache, beam_search, suppressed

from .conftest import shipped_gem_config, shipped_like_gem, tiny_gem

EOS = 0


def _markov(seed: int, vocab: int = 3):
    """A toy decoder: log-probs (V,) after (the last token, the position), from a fixed table."""
    g = torch.Generator().manual_seed(seed)
    table = torch.log_softmax(torch.randn(vocab + 1, 8, vocab, generator=g) * 2, dim=-1)
    first = table[vocab, 0]

    def logprobs(ids: list[int]) -> torch.Tensor:
        return table[ids[-1], len(ids)] if ids else first
    return logprobs


def _stepper(logprobs):
    """A `step` for beam_search over the toy decoder, tracking each live hypothesis itself."""
    live = [[]]

    def step(tokens, parents):
        live[:] = [live[p] + [t] for p, t in zip(parents.tolist(), tokens.tolist())]
        return torch.stack([logprobs(ids) for ids in live])
    return step


def _exhaustive(logprobs, vocab: int, max_new: int, length_penalty: float) -> list[int]:
    """The best sequence by log-prob / length ** length_penalty over every ending (EOS, or the cap)."""
    best, best_ids = -math.inf, None
    for n in range(1, max_new + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if EOS in seq[:-1] or (n < max_new and seq[-1] != EOS):
                continue  # EOS ends a hypothesis; without it only the cap does
            score = sum(float(logprobs(list(seq[:i]))[t]) for i, t in enumerate(seq))
            if score / n ** length_penalty > best:
                best, best_ids = score / n ** length_penalty, [t for t in seq if t != EOS]
    return best_ids


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_without_pruning_is_exhaustive_search(seed, length_penalty):
    lp = _markov(seed)
    got = beam_search(_stepper(lp), lp([]), EOS, num_beams=100, max_new_tokens=4, length_penalty=length_penalty)
    assert got == _exhaustive(lp, 3, 4, length_penalty)


def test_two_beams_find_what_greedy_misses():
    """Greedy takes the likelier first token (0.6) whose continuations are all weak (0.4 at best);
    two beams keep the other (0.4), whose continuation is sure: 0.4 > 0.24."""
    strong = torch.log(torch.tensor([1e-9, 0.6, 0.4 - 1e-9]))

    def lp(ids):
        if not ids:
            return strong
        if len(ids) == 1:
            return torch.log(torch.tensor([1e-9, 0.4, 0.6 - 1e-9]) if ids[0] == 1 else torch.tensor([1e-9, 1 - 2e-9, 1e-9]))
        return torch.log(torch.tensor([1 - 2e-9, 1e-9, 1e-9]))  # then EOS
    assert beam_search(_stepper(lp), lp([]), EOS, num_beams=1, max_new_tokens=3, length_penalty=0.0) == [1, 2]
    assert beam_search(_stepper(lp), lp([]), EOS, num_beams=2, max_new_tokens=3, length_penalty=0.0) == [2, 1]


def test_bad_beam_counts_are_refused():
    lp = _markov(0)
    with pytest.raises(ValueError, match="num_beams=0"):
        beam_search(_stepper(lp), lp([]), EOS, num_beams=0, max_new_tokens=4)
    assert beam_search(_stepper(lp), lp([]), EOS, num_beams=2, max_new_tokens=0) == []
    with pytest.raises(ValueError, match="reconstruct_beams must be >= 1"):
        GemConfig(reconstruct_beams=0)


def test_reconstruct_decodes_as_the_model_says_unless_told(monkeypatch, tmp_path):
    """`reconstruct()` with no width uses the model's own (`GemConfig.reconstruct_beams`, saved with it:
    the shipped model's 8, which the shipped-like model copies); a given width wins; a saved config
    from before the setting existed loads as greedy."""
    gem = shipped_like_gem(max_length=64)
    assert gem.gem_config.reconstruct_beams == shipped_gem_config().reconstruct_beams
    widths = []
    real = lab.gem.model.beam_from_cache
    monkeypatch.setattr(lab.gem.model, "beam_from_cache", lambda *a: widths.append(a[-1]) or real(*a))
    text, own_width = "the cat sat on the mat", gem.gem_config.reconstruct_beams
    own = gem.reconstruct_ids(text)
    assert widths == ([own_width] if own_width > 1 else [])
    assert own == gem.reconstruct_ids(text, num_beams=own_width)
    gem.gem_config.reconstruct_beams = 3
    widths.clear()
    gem.reconstruct_ids(text)
    gem.reconstruct_ids(text, num_beams=1)  # told: greedy, no beam search
    assert widths == [3]
    with pytest.raises(ValueError, match="num_beams=0"):  # a bad width is refused, not read as "the default"
        gem.reconstruct_ids(text, num_beams=0)
    old = {k: v for k, v in dataclasses.asdict(gem.gem_config).items() if k != "reconstruct_beams"}
    (tmp_path / GemConfig.FILENAME).write_text(json.dumps(old))
    assert GemConfig.load(tmp_path).reconstruct_beams == 1


def _alone(gem, text):
    """A step that decodes every hypothesis from its own fresh S cache: no batching, no reordering."""
    live = [[]]
    cache, pos, logits = gem.special_cache(text)

    def logprobs(ids):
        if not ids:
            return torch.log_softmax(suppressed(logits[0], gem.special_ids).float(), -1)
        c, p, _ = gem.special_cache(text)
        return torch.log_softmax(suppressed(gem.continue_from_cache(c, ids, p)[-1], gem.special_ids).float(), -1)

    def step(tokens, parents):
        live[:] = [live[p] + [t] for p, t in zip(parents.tolist(), tokens.tolist())]
        return torch.stack([logprobs(ids) for ids in live])
    return step, logprobs([])


@pytest.mark.parametrize("make", [lambda: shipped_like_gem(), lambda: tiny_gem("gemma3", k=2)],
                         ids=["shipped-like", "gemma3"])
def test_batched_beams_equal_each_hypothesis_decoded_alone(make, monkeypatch):
    """The S cache repeated to one row per beam and reordered as beams extend gives, at every step,
    the log-probabilities each hypothesis gets decoded alone from a fresh cache."""
    gem = make()
    text = "a short text to read back"
    seen = []
    step, first = _alone(gem, text)

    def recording(tokens, parents):
        out = step(tokens, parents)
        seen.append(out)
        return out
    cache, pos, logits = gem.special_cache(text)
    batched = []

    def spy(step_fn, first_lp, *args, **kwargs):
        def wrapped(tokens, parents):
            out = step_fn(tokens, parents)
            batched.append(out)
            return out
        return beam_search(wrapped, first_lp, *args, **kwargs)
    monkeypatch.setattr(lab.gem.beam, "beam_search", spy)
    ids = beam_from_cache(gem, cache, pos, logits[0], 6, num_beams=3)
    assert ids == beam_search(recording, first, gem.tokenizer.eos_token_id, 3, 6)
    assert len(batched) == len(seen) > 1
    for a, b in zip(batched, seen):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert gem.reconstruct_ids(text, max_new_tokens=6, num_beams=3) == ids
    assert gem.reconstruct(text, max_new_tokens=6, num_beams=1) == gem.reconstruct(text, max_new_tokens=6)
