"""Quick evaluation during training: one embedding score and held-out perplexity.

    lee50_spearman   Lee-50 document similarity (Lee, Pincombe & Welsh 2005; 50 news documents, the
                     1,225 pairs' human scores, shipped in the gensim wheel): Spearman correlation of
                     embedding cosines with the human scores. Disjoint from the Wikipedia training text.
    heldout_ppl      perplexity of the plain causal LM (no special tokens) on held-out Wikipedia rows.

Logged every `eval_every` steps, the two make the embedding-vs-language trade-off a curve.
"""

from __future__ import annotations

import math
import torch

from .corpus import read_jsonl
from .losses import ntp_loss_sum
from .evaluation.data import lee50


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def lee50_spearman(gem, pooling: str | None = None, batch_size: int = 8) -> float:
    docs, pairs = lee50()
    emb = gem.encode(docs, pooling=pooling, batch_size=batch_size, show_progress_bar=False)
    cos = [float(emb[i] @ emb[j]) for i, j, _ in pairs]
    return spearman(cos, [s for _, _, s in pairs])


@torch.no_grad()
def heldout_perplexity(gem, path: str, max_rows: int = 200, batch_size: int = 16) -> float:
    """exp(mean next-token cross-entropy) of the plain LM over the first `max_rows` held-out texts."""
    from .tokens import Row, pad_rows

    texts = [r["text"] for r in read_jsonl(path)][:max_rows]
    ids, _ = gem._text_ids(texts, gem.max_length - len(gem.bos))
    ids = sorted(ids, key=len)  # batches of similar length: little padding (the mean is order-free)
    total, count = 0.0, 0
    for i in range(0, len(ids), batch_size):
        rows = [Row.build(gem.bos + x, [], bos_token_id=gem.bos[0] if gem.bos else None) for x in ids[i:i + batch_size]]
        batch = pad_rows(rows, gem.tokenizer.pad_token_id)
        real = (batch["roles"] != 0)
        logits = gem.model(input_ids=batch["input_ids"].to(gem.device), attention_mask=real.long().to(gem.device)).logits
        labels = torch.where(real, batch["input_ids"], -100).to(gem.device)
        t, c = ntp_loss_sum(logits, labels)
        total, count = total + float(t), count + int(c)
    return math.exp(total / max(count, 1))


def quick_eval(gem, heldout: str, max_rows: int = 200) -> dict[str, float]:
    """{"lee50_spearman", "heldout_ppl"} for a GemModel (GEM readout if it has trained tokens)."""
    return {"lee50_spearman": lee50_spearman(gem), "heldout_ppl": heldout_perplexity(gem, heldout, max_rows)}
