"""Beam search for decoding from a KV cache (reconstruction from the S cache).

    ids = beam_search(step, first_logprobs, eos_id, num_beams=4, max_new_tokens=24)
    ids = beam_from_cache(gem, cache, pos, logits, max_new_tokens=24, num_beams=4)   # GemModel.reconstruct's

`step(tokens, parents)` feeds one token per live beam after reordering the caller's cache to
`parents` (which beam each new one extends) and returns the next log-probabilities (B, V). The search
keeps `num_beams` live hypotheses; one ends when it emits `eos_id` or reaches `max_new_tokens`
tokens. Hypotheses are ranked by log-probability / length ** `length_penalty` (length counts EOS),
as in transformers' `generate(num_beams=...)`; the best one is returned without its EOS.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import DynamicCache

from .forward import unwrap

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def suppressed(logits: torch.Tensor, banned: list[int]) -> torch.Tensor:
    """`logits` (..., V) with the `banned` ids (the GEM tokens) at -inf: a decode never emits them."""
    logits = logits.clone()
    logits[..., torch.tensor(banned, device=logits.device)] = float("-inf")
    return logits


@torch.inference_mode()
def beam_from_cache(gem, cache: DynamicCache, pos: int, logits: torch.Tensor, max_new_tokens: int,
                    num_beams: int) -> list[int]:
    """Beam-search ids (GEM tokens banned; a hypothesis ends at EOS) after `gem`'s batch-1 `cache`,
    from the next-token `logits` (V,) of the token at position `pos` - 1. The cache is repeated to
    one row per live beam, then reordered as beams extend, and grows as it decodes."""
    n_cached, model, t = cache.get_seq_length(), unwrap(gem.model), [0]

    def step(tokens: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        if t[0] == 0:
            cache.batch_repeat_interleave(len(parents))
        else:
            cache.reorder_cache(parents.to(gem.device))
        b = len(tokens)
        out = model(input_ids=tokens[:, None].to(gem.device), position_ids=torch.full((b, 1), pos + t[0], device=gem.device),
                    attention_mask=torch.ones(b, n_cached + t[0] + 1, dtype=torch.long, device=gem.device),
                    cache=cache, use_cache=True).logits[:, -1]
        t[0] += 1
        return torch.log_softmax(suppressed(out, gem.special_ids).float(), dim=-1)

    first = torch.log_softmax(suppressed(logits, gem.special_ids).float(), dim=-1)
    return beam_search(step, first, gem.tokenizer.eos_token_id, num_beams, max_new_tokens)


def _normalised(score: float, length: int, length_penalty: float) -> float:
    return score / (length ** length_penalty)


def beam_search(step: Step, first_logprobs: torch.Tensor, eos_id: int | None, num_beams: int,
                max_new_tokens: int, length_penalty: float = 1.0) -> list[int]:
    """The best-ranked token ids (EOS dropped) under beam search.

    first_logprobs: (V,) log-probabilities of the first token (set banned tokens to -inf before).
    step(tokens (B,), parents (B,)) -> (B, V) log-probabilities after appending tokens[b] to the
    hypothesis `parents[b]` of the previous step (indices into the previous step's live beams).
    """
    if num_beams < 1:
        raise ValueError(f"num_beams={num_beams}: it must be at least 1")
    if max_new_tokens < 1:
        return []
    finished: list[tuple[float, list[int]]] = []  # (normalised score, ids without EOS)
    beams: list[tuple[float, list[int]]] = [(0.0, [])]  # (sum of log-probs, ids)
    logprobs = first_logprobs[None].float()
    for length in range(1, max_new_tokens + 1):
        sums = torch.tensor([s for s, _ in beams])[:, None] + logprobs  # (B, V)
        n_cand = min(2 * num_beams, sums.numel())
        top, flat = sums.flatten().topk(n_cand)
        live, parents, tokens = [], [], []
        for score, index in zip(top.tolist(), flat.tolist()):
            parent, token = divmod(index, sums.shape[1])
            if score == float("-inf"):
                break
            ids = beams[parent][1] + [token]
            if token == eos_id:
                finished.append((_normalised(score, length, length_penalty), ids[:-1]))
            elif length == max_new_tokens:  # the cap: ends without EOS
                finished.append((_normalised(score, length, length_penalty), ids))
            else:
                live.append((score, ids))
                parents.append(parent)
                tokens.append(token)
            if len(live) == num_beams:
                break
        finished = sorted(finished, key=lambda f: -f[0])[:num_beams]
        if not live or _done(finished, live, length, num_beams, length_penalty):
            break
        beams = live
        logprobs = step(torch.tensor(tokens), torch.tensor(parents)).float()
    if not finished:  # every continuation was banned
        return max(beams, key=lambda b: b[0])[1]
    return finished[0][1]


def _done(finished, live, length: int, num_beams: int, length_penalty: float) -> bool:
    """transformers' early_stopping=False rule: `num_beams` hypotheses have ended and the best live
    one, scored at its current length, ranks below the worst of them."""
    if len(finished) < num_beams:
        return False
    best_live = max(_normalised(s, length, length_penalty) for s, _ in live)
    return best_live <= finished[-1][0]
