"""The app's first view: why GEM. One prefill of a document gives its embedding *and* the cache an
answer continues from; the embedding is put to use at once (compared with a few other texts), and
the timing sets the one prefill against embedding and generating separately.
"""

from __future__ import annotations

import numpy as np

from .handlers import MAX_TEXT_TOKENS, Session, check_text, embed_and_answer

MAX_COMPARE = 12  # texts the embedding is compared with


def compare_texts(lines: str | None) -> list[str]:
    """The non-empty lines of `lines` (at most MAX_COMPARE), or a ValueError naming the fix."""
    texts = [t.strip() for t in (lines or "").splitlines() if t.strip()]
    if not texts:
        raise ValueError("give at least one text to compare the embedding with (one per line)")
    if len(texts) > MAX_COMPARE:
        raise ValueError(f"{len(texts)} texts to compare: at most {MAX_COMPARE}, one per line")
    return texts


def why_gem(session: Session, document: str, question: str, compare: str, max_new_tokens: int = 12) -> dict:
    """{"answer", "info", "ranked": [[rank, cosine, text], ...] (the compare texts by cosine to the
    document's embedding, best first), "warnings"}: one prefill, both uses."""
    _, gem = session.models()
    texts = compare_texts(compare)
    r = embed_and_answer(session, check_text(document, "document"), question, max_new_tokens)
    others = gem.encode(texts, pooling="gem", max_length=MAX_TEXT_TOKENS)  # (n, d), unit length
    scores = others @ np.asarray(r["embedding"])
    order = np.argsort(-scores, kind="stable")
    ranked = [[i + 1, round(float(scores[j]), 3), texts[j]] for i, j in enumerate(order)]
    return {"answer": r["answer"], "info": r["info"], "ranked": ranked, "warnings": r["warnings"]}
