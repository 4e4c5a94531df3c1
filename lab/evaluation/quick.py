"""Quick evaluation during training: one embedding score and held-out perplexity.

    lee50_spearman   Lee-50 document similarity (Lee, Pincombe & Welsh 2005; 50 news documents, the
                     1,225 pairs' human scores, shipped in the gensim wheel): Spearman correlation of
                     embedding cosines with the human scores. Disjoint from the Wikipedia training text.
    heldout_ppl      perplexity of the plain causal LM (no special tokens) on held-out Wikipedia rows.

Logged every `eval_every` steps, the two make the embedding-vs-language trade-off a curve.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..corpora.eval_sets import lee50
from ..gem.lm_loss import IGNORE_INDEX, ntp_loss_sum
from ..gem.masks import Role
from ..gem.tokens import Row, pad_rows, text_ids
from ..storage import read_jsonl


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def lee50_spearman(gem, pooling: str | None = None, batch_size: int = 8) -> float:
    docs, pairs = lee50()
    emb = gem.encode(docs, pooling=pooling, batch_size=batch_size, show_progress_bar=False)
    cos = [float(emb[i] @ emb[j]) for i, j, _ in pairs]
    return spearman(cos, [s for _, _, s in pairs])


def heldout_perplexity(gem, path: str, max_rows: int = 200, batch_size: int = 16) -> float:
    """exp(mean next-token cross-entropy) of the plain LM over the first `max_rows` held-out texts."""
    return text_perplexity(gem, [r["text"] for r in read_jsonl(path)][:max_rows], batch_size)


@torch.no_grad()
def text_perplexity(gem, texts: list[str], batch_size: int = 16, max_tokens: int | None = None) -> float:
    """exp(mean next-token cross-entropy) of the plain LM over `texts`, each cut to `max_tokens`
    (default: the model's max_length). The tokens scored are those of the tokenizer's own rows:
    a sink token (`GemConfig.sink_token`) in front does not make the first text token a target,
    so a model with a sink and its base model are scored on the same tokens."""
    budget = min(max_tokens or gem.max_length, gem.max_length - len(gem.bos))
    ids, _ = text_ids(gem.tokenizer, texts, budget)
    ids = sorted(ids, key=len)  # batches of similar length: little padding (the mean is order-free)
    total, count = 0.0, 0
    for i in range(0, len(ids), batch_size):
        rows = [Row.build(gem.bos + x, [], bos_token_id=gem.bos[0] if gem.bos else None) for x in ids[i:i + batch_size]]
        batch = pad_rows(rows, gem.pad_token_id)
        real = batch["roles"] != Role.PAD
        logits = gem.model(input_ids=batch["input_ids"].to(gem.device), attention_mask=real.long().to(gem.device)).logits
        labels = torch.where(real, batch["input_ids"], IGNORE_INDEX)
        labels[:, :len(gem.sink_ids) + 1] = IGNORE_INDEX  # a sink does not make the first text token a target
        t, c = ntp_loss_sum(logits, labels.to(gem.device))
        total, count = total + float(t), count + int(c)
    return math.exp(total / max(count, 1))


def quick_eval(gem, heldout: str, max_rows: int = 200) -> dict[str, float]:
    """{"lee50_spearman", "heldout_ppl"} for a GemModel (GEM readout if it has trained tokens)."""
    return {"lee50_spearman": lee50_spearman(gem), "heldout_ppl": heldout_perplexity(gem, heldout, max_rows)}


def neighbour_agreement(emb: np.ndarray, labels: list, k: int = 10) -> float:
    """Share of each text's k nearest neighbours (cosine, itself excluded) that carry its label:
    1.0 when every topic forms its own tight cluster, about 1/n_labels for random embeddings.

    emb: (n, d) unit-norm rows; labels: n labels; k < n.
    """
    if not 0 < k < len(emb):
        raise ValueError(f"k={k} must be between 1 and the number of texts minus one ({len(emb) - 1})")
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    lab = np.asarray(labels)
    return float((lab[nearest] == lab[:, None]).mean())
