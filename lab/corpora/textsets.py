"""Text sets to embed and map: bundled labelled sets (built at set-up) and user text.

    bundled_sets()                         {name: description}
    load_bundled(name)                     TextSet (texts, labels) from data/build/eval
    parse_pasted(text)                     TextSet, one text per non-empty line
    parse_upload(path)                     TextSet from .txt (one per line) or .csv (`text`[, `label`])

Limits (`MAX_TEXTS`) are enforced here, with a warning that says what was kept; every error
names the problem and what to do instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

MAX_TEXTS = 1000
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_TYPES = (".txt", ".csv")

BUNDLED = {
    "BBC headlines (500, 5 topics)": ("bbc.jsonl", "title", "label", 500),
    "BBC article leads (300, 5 topics)": ("bbc.jsonl", "lead", "label", 300),
    "MMLU questions (400, 57 subjects)": ("mmlu.jsonl", "question", "topic", 400),
    "Lee-50 news documents (50)": ("lee_sts.jsonl", "lee", None, 50),
}


@dataclass
class TextSet:
    texts: list[str]
    labels: list[str] | None = None
    warnings: list[str] = field(default_factory=list)

    def key(self) -> str:
        """sha256 of texts and labels: the cache key of this set's embeddings and maps."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8") + b"\0")
        for lab in self.labels or []:
            h.update(lab.encode("utf-8") + b"\1")
        return h.hexdigest()


def bundled_sets() -> list[str]:
    return list(BUNDLED)


def load_bundled(name: str, data_dir=None) -> TextSet:
    from .eval_sets import lead, read_eval, repair_latin1_reading

    if name not in BUNDLED:
        raise ValueError(f"unknown text set {name!r}; choose one of: {', '.join(BUNDLED)}")
    file, text_key, label_key, n = BUNDLED[name]
    rows = read_eval(file, data_dir)
    if text_key == "lee":
        docs = list(dict.fromkeys([r["sentence1"] for r in rows] + [r["sentence2"] for r in rows]))
        return TextSet(docs[:n])
    rows = rows[:n]
    texts = [repair_latin1_reading(lead(r["text"], 50) if text_key == "lead" else r[text_key].strip()) for r in rows]
    return TextSet(texts, [r[label_key] for r in rows] if label_key else None)


def _limit(texts: list[str], labels: list[str] | None, source: str) -> TextSet:
    warnings = []
    if len(texts) > MAX_TEXTS:
        warnings.append(f"{source} has {len(texts):,} texts; only the first {MAX_TEXTS:,} are used "
                        f"(split the file to map the rest)")
        texts, labels = texts[:MAX_TEXTS], (labels[:MAX_TEXTS] if labels else None)
    if len(texts) < 2:
        raise ValueError(f"{source} has {len(texts)} non-empty text(s); a map needs at least 2 "
                         f"(one text per line)")
    return TextSet(texts, labels, warnings)


def parse_pasted(text: str | None) -> TextSet:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return _limit(lines, None, "the pasted text")


def parse_upload(path: str | Path) -> TextSet:
    path = Path(path)
    if path.suffix.lower() not in UPLOAD_TYPES:
        raise ValueError(f"{path.name}: unsupported file type {path.suffix or '(none)'}; upload a .txt "
                         f"(one text per line) or a .csv with a 'text' column (and optionally 'label')")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not UTF-8 text; save it as UTF-8 and upload again") from None
    if "\0" in content:
        raise ValueError(f"{path.name} looks binary (it contains NUL bytes); upload plain text")
    if path.suffix.lower() == ".txt":
        return _limit([ln.strip() for ln in content.splitlines() if ln.strip()], None, path.name)
    reader = csv.DictReader(io.StringIO(content))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "text" not in fields:
        raise ValueError(f"{path.name} has columns {reader.fieldnames}; it needs a 'text' column "
                         f"(and optionally 'label')")
    texts, labels = [], []
    for row in reader:
        row = {(k or "").strip().lower(): (v or "") for k, v in row.items()}
        if row["text"].strip():
            texts.append(row["text"].strip())
            labels.append(row.get("label", "").strip())
    has_labels = "label" in fields and any(labels)
    return _limit(texts, labels if has_labels else None, path.name)
