"""The training corpus: Wikipedia articles shipped in the gensim wheel -> clean sentences and windows.

    python -m lab data build        # -> data/build/wiki/{train,heldout}.jsonl + meta.json (< 1 min)

Source: `gensim/test/test_data/enwiki-latest-pages-articles1.xml-...-shortened.bz2` (106 real
articles, ~480k words; Wikipedia text is CC BY-SA 3.0/4.0, gensim is LGPL). Steps: drop redirects,
strip wiki markup (gensim's `filter_wiki`), keep prose paragraphs, split into sentences, emit each
sentence and each window of two or three consecutive sentences as a row, deduplicate, and hold out whole
articles (chosen by a hash of the title, so the split is stable) for perplexity. Every row records
its article title; `meta.json` records the source package version, licence, counts and sha256s.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.metadata
import json
import logging
import re
from pathlib import Path

from ..storage import PROJECT_ROOT, atomic_dir, folder_problem, package_dir
from .eval_sets import evaluation_texts

log = logging.getLogger(__name__)

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LICENCE = "Wikipedia text: CC BY-SA (https://en.wikipedia.org/wiki/Wikipedia:Copyrights); via gensim (LGPL-2.1) test data"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
MARKUP = re.compile(r"[|{}\[\]<>=]|^\s*[*#:;]|https?://|\bthumb\b|\bCategory:", re.I)
ABBREVIATION_END = re.compile(r"\b(?:[A-Z]|Mr|Mrs|Dr|St|Jr|Sr|vs|ca|c|e\.g|i\.e|etc|No|Vol|pp?)\.$")


def wiki_articles() -> list[tuple[str, str]]:
    """(title, plain text) of the non-redirect articles in the gensim wheel."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    root = package_dir("gensim")
    if root is None:
        raise RuntimeError("the gensim package is not installed; run `make install`")
    with bz2.open(root / "test" / "test_data" / WIKI_FILE) as f:
        return [(title, filter_wiki(text)) for title, text, _ in extract_pages(f)
                if not text.lower().lstrip().startswith("#redirect")]


def prose_paragraphs(text: str, min_words: int = 8) -> list[str]:
    """Paragraphs that read as prose: long enough, ending like a sentence, without markup."""
    out = []
    for line in text.split("\n"):
        line = re.sub(r"\s+", " ", line).strip()
        if len(line.split()) < min_words or MARKUP.search(line) or not line.endswith((".", "!", "?", '."')):
            continue
        out.append(line)
    return out


def split_sentences(paragraph: str) -> list[str]:
    """Sentence split on end punctuation followed by a capital/digit/quote, not after abbreviations."""
    parts, buf = [], ""
    for piece in SENTENCE_END.split(paragraph):
        buf = f"{buf} {piece}".strip() if buf else piece
        if not ABBREVIATION_END.search(buf):
            parts.append(buf)
            buf = ""
    if buf:
        parts.append(buf)
    return parts


def article_rows(title: str, text: str, min_words: int = 6, max_words: int = 64,
                 window_max_words: int = 96) -> list[dict]:
    """Rows of one article: each sentence, and each window of 2 or 3 consecutive sentences of the
    same paragraph (windows give the model multi-sentence texts to compress)."""
    rows = []
    for para in prose_paragraphs(text):
        sents = [s for s in split_sentences(para) if min_words <= len(s.split()) <= max_words]
        rows += [{"text": s, "title": title, "kind": "sentence"} for s in sents]
        for n in (2, 3):
            for i in range(len(sents) - n + 1):
                window = sents[i:i + n]
                if sum(len(s.split()) for s in window) <= window_max_words:
                    rows.append({"text": " ".join(window), "title": title, "kind": f"window{n}"})
    return rows


def is_heldout(title: str, fraction: float = 0.05) -> bool:
    """Stable article-level split: a title is held out when its hash falls in the first `fraction`."""
    h = int(hashlib.sha256(title.encode("utf-8")).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def normalise(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def shingles(text: str, n: int = 8) -> set[str]:
    """Every run of n consecutive (normalised) words of `text`."""
    words = normalise(text).split()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def build_rows(heldout_fraction: float = 0.05, avoid: set[str] | None = None) -> tuple[list[dict], list[dict], dict]:
    """(train rows, held-out rows, {"duplicates": n, "evaluation_overlap": n} dropped).

    avoid: word 8-grams of the evaluation texts; a row sharing any of them is dropped (MMLU
    quotes Wikipedia, for instance), so training text is disjoint from every evaluation text.
    """
    avoid = avoid or set()
    seen: set[str] = set()
    train, heldout = [], []
    dropped = {"duplicates": 0, "evaluation_overlap": 0}
    for title, text in wiki_articles():
        target = heldout if is_heldout(title, heldout_fraction) else train
        for row in article_rows(title, text):
            key = normalise(row["text"])
            if key in seen:
                dropped["duplicates"] += 1
                continue
            if shingles(row["text"]) & avoid:
                dropped["evaluation_overlap"] += 1
                continue
            seen.add(key)
            target.append(row)
    return train, heldout, dropped


CORPUS_VERSION = 2  # 2: rows sharing an 8-word run with any evaluation text are dropped


def _built_version(folder: Path) -> int | None:
    try:
        return json.loads((folder / "meta.json").read_text()).get("version")
    except (OSError, ValueError):
        return None


def default_build_dir() -> Path:
    return PROJECT_ROOT / "data" / "build" / "wiki"


def build_corpus(out_dir: str | Path | None = None, heldout_fraction: float = 0.05, force: bool = False) -> Path:
    """Write train.jsonl, heldout.jsonl and meta.json to `out_dir` atomically (skipped if present)."""

    out_dir = Path(out_dir) if out_dir else default_build_dir()
    if not force and folder_problem(out_dir) is None and _built_version(out_dir) == CORPUS_VERSION:
        log.info("corpus already built at %s", out_dir)
        return out_dir

    avoid = set().union(*(shingles(t) for t in evaluation_texts()))
    train, heldout, dropped = build_rows(heldout_fraction, avoid)
    meta = {
        "version": CORPUS_VERSION,
        "source": f"gensim=={importlib.metadata.version('gensim')}:gensim/test/test_data/{WIKI_FILE}",
        "licence": LICENCE,
        "rows": {"train": len(train), "heldout": len(heldout), "dropped": dropped},
        "disjoint_from": "every evaluation text (no shared run of 8 words; lab/corpora/eval_sets.py)",
        "articles": {"train": len({r['title'] for r in train}), "heldout": len({r['title'] for r in heldout})},
        "words": {"train": sum(len(r["text"].split()) for r in train)},
        "heldout_fraction": heldout_fraction,
    }
    with atomic_dir(out_dir, metadata=meta, replace_foreign=force) as tmp:
        for name, rows in (("train", train), ("heldout", heldout)):
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("built corpus: %s", meta["rows"])
    return out_dir
