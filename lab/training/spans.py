"""Short spans of training text: words and phrases for the embedding to see beside sentences.

The training corpus is sentences and 2-3 sentence windows, so a model distilled on it only learns
the teacher's space for sentences; single words and short phrases (word similarity, keyword
queries, titles) stay where the base model put them. With `span_views` a share of the query views
is cut to a few words of its text:

    "The Eiffel Tower was completed in 1889 for the World's Fair."
        -> "Eiffel"  |  "World's Fair"  |  "was completed in 1889"

Lengths are drawn from SPAN_WORDS (1-6 words, short ones most often); the punctuation around
each word is stripped and wiki markup ('''bold''') removed. Pure functions of (text, rng).
"""

from __future__ import annotations

import random

SPAN_WORDS = (1, 1, 1, 2, 2, 3, 4, 6)  # drawn uniformly: half the spans are 1-2 words
_STRIP = ".,;:!?'\"()[]{}"


def span_words(text: str) -> list[str]:
    """The words of `text` with the punctuation around each removed (empty words dropped)."""
    words = (w.strip(_STRIP) for w in text.replace("'''", "").replace("''", "").split())
    return [w for w in words if w]


def random_span(text: str, rng: random.Random) -> str:
    """A span of 1-6 consecutive words of `text` (the whole text if it has fewer words); "" for a
    text without words."""
    words = span_words(text)
    if not words:
        return ""
    n = min(len(words), rng.choice(SPAN_WORDS))
    start = rng.randrange(len(words) - n + 1)
    return " ".join(words[start:start + n])
