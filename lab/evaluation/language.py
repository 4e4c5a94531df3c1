"""What GEM costs and keeps on the language side: held-out perplexity and reconstruction.

    perplexity        the plain LM (no special tokens) on held-out Wikipedia rows, disjoint from
                      training text (whole articles are held out) but the training domain; and on
                      BBC News articles (out of domain); see lab.evaluation.quick
    reconstruction    paper Appendix B: append S, keep only S's key/value cache, greedy-decode
                      n tokens; exact match = the decoded text equals the input. Reported per
                      input-length bucket (in tokens), on held-out rows cut to each length: held-out
                      Wikipedia (the training domain) and BBC News (another domain)
"""

from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..gem.model import RECONSTRUCT_SLACK
from ..storage import read_jsonl
from .quick import heldout_perplexity, text_perplexity

log = logging.getLogger(__name__)

__all__ = ["heldout_perplexity", "reconstruction_by_length", "suffix_attention", "text_perplexity"]


def _texts_of_length(gem, texts: list[str], n_tokens: int, count: int) -> list[list[int]]:
    """`count` token sequences of exactly `n_tokens` (prefixes of the held-out texts long enough)."""
    out = []
    for text in texts:
        ids = gem.text_ids(text)
        if len(ids) >= n_tokens:
            out.append(ids[:n_tokens])
        if len(out) == count:
            break
    return out


STOP_SLACK = RECONSTRUCT_SLACK  # tokens a reconstruction may run past the text before it counts as not stopping


@torch.inference_mode()
def reconstruction_by_length(gem, heldout: str | list[str], lengths=(8, 16, 32, 64), per_length: int = 16,
                             num_beams: int | None = None) -> dict:
    """{"exact", "token_accuracy", "exact_with_stop", "stopped", "count"}, each {n: value}, and
    "num_beams" (1: greedy), for a GEM model; num_beams None: the model's own setting, as
    `reconstruct()` decodes when not told (`GemConfig.reconstruct_beams`).

    exact: the first n decoded tokens are the text; token_accuracy: share of the n positions where
    the decoded token equals the input token; exact_with_stop: the decode is the text and then
    stops (EOS; what `reconstruct()` hands a user); stopped: share of decodes that stop within the
    safeguard (n + `STOP_SLACK` tokens). One decode of n + STOP_SLACK tokens (greedy, or beam search
    with `num_beams` > 1, as `reconstruct(num_beams=...)`) gives all four.
    heldout: a JSON-lines file of {"text": ...} rows, or the texts themselves.
    """
    gem.require_gem_tokens("reconstruction")
    num_beams = gem.gem_config.reconstruct_beams if num_beams is None else num_beams
    texts = [r["text"] for r in read_jsonl(heldout)] if isinstance(heldout, (str, Path)) else list(heldout)
    exact, tok_acc, count, with_stop, stopped = {}, {}, {}, {}, {}
    for n in lengths:
        seqs = _texts_of_length(gem, texts, n, per_length)
        hits, matched, total, hits_stop, stops = 0, 0, 0, 0, 0
        for ids in tqdm(seqs, desc=f"reconstruct {n} tokens", leave=False):
            text = gem.tokenizer.decode(ids)
            ids = gem.text_ids(text)  # what the model reads (a cut can re-tokenise differently)
            full = gem.reconstruct_ids(text, max_new_tokens=len(ids) + STOP_SLACK, num_beams=num_beams)
            out = full[:len(ids)]  # the first n tokens of what reconstruct() hands a user (greedy: = a decode of n)
            matched += sum(a == b for a, b in zip(out, ids))
            total += len(ids)
            hits += out == ids
            hits_stop += full == ids
            stops += len(full) < len(ids) + STOP_SLACK
        if seqs:
            exact[n], tok_acc[n], count[n] = hits / len(seqs), matched / max(total, 1), len(seqs)
            with_stop[n], stopped[n] = hits_stop / len(seqs), stops / len(seqs)
    return {"exact": exact, "token_accuracy": tok_acc, "exact_with_stop": with_stop, "stopped": stopped,
            "count": count, "num_beams": num_beams}


def suffix_attention(gem, heldout: str, n_texts: int = 12, min_tokens: int = 16) -> dict:
    """Where suffix tokens look under the GEM mask: {"special", "bos", "suffix"} shares of their
    attention (mean over layers, heads and suffix tokens after the first), on `n_texts` held-out
    texts of at least `min_tokens` tokens, each split in the middle into `prefix | S | suffix`.

    Reconstruction and continuation need the suffix to read S; a small "special" share with a
    large "suffix" share means an early suffix token took over as the attention sink.
    """
    gem.require_gem_tokens("suffix attention")
    rows = (gem.text_ids(r["text"])[:64] for r in read_jsonl(heldout))
    texts = list(islice((ids for ids in rows if len(ids) >= min_tokens), n_texts))
    shares = {"special": [], "bos": [], "suffix": []}
    for ids in tqdm(texts, desc="suffix attention", leave=False):
        view = gem.attention(gem.tokenizer.decode(ids), split=len(ids) // 2)
        for key in shares:
            shares[key].append(view.share_on("suffix", key, skip_first_query=True))
    means = {k: [x for x in v if x == x] for k, v in shares.items()}  # NaN: no such key (e.g. no BOS)
    return {k: float(sum(v) / len(v)) if v else None for k, v in means.items()}
