"""`python -m lab eval`: embedding tasks (mteb), MMLU (lm-eval), perplexity, reconstruction.

    python -m lab eval --model smollm2-135m --pooling mean,last,prompteol,echo --output results/base.json
    python -m lab eval --model runs/gem-smollm2-135m/last --output results/gem.json      # pooling gem
    python -m lab eval --model minilm --output results/minilm.json                     # encoder reference
    python -m lab report results/*.json --out results/report                            # .md + .html

Suites differ only in sizes (`SUITES`): quick is sized to take <= 10 minutes on a 2-core CPU for
the default model and one pooling; full uses every row and the whole MMLU test set. Every number
is deterministic for a seed; the result file records package versions, commit, config and timings.
A result file is written atomically; an existing one is never overwritten unless --force.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..weights.dtypes import cpu_model
from ..weights.loading import load, weights_fingerprint
from ..storage import PROJECT_ROOT, write_json_atomic
from .report import row_kmeans_draws
from .tasks import FULL, LOCAL_CLUSTERING_TASKS, LOCAL_TASK_NAMES, QUICK, TASK_NAMES, WIDE, TaskSizes, build_tasks, run_tasks, task_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suite:
    name: str
    sizes: TaskSizes
    max_length: int  # tokens per text for embeddings (articles are cut here)
    mmlu_limit: int | None  # None = the whole test set (14,042 questions)
    mmlu_fewshot: int = 5
    perplexity_rows: int = 200
    news_rows: int = 100  # out-of-domain perplexity: BBC News articles, each cut to news_max_tokens
    news_max_tokens: int = 128
    reconstruction_lengths: tuple = (8, 16, 32, 64)
    reconstruction_per_length: int = 8
    reconstruction_beams: int | None = None  # None: as reconstruct() decodes the model by default; 1 greedy; > 1 beams
    tasks: tuple = TASK_NAMES


SUITES = {
    # seconds, for CI and the notebooks' QUICK mode: every part runs, the numbers mean nothing
    "smoke": Suite("smoke", TaskSizes(classification_train=40, classification_test=40, clustering=60,
                                      retrieval_queries=30, pairs=40, samples_per_label=4, n_experiments=1,
                                      kmeans_draws=2),
                   max_length=64, mmlu_limit=4, mmlu_fewshot=1, perplexity_rows=8, news_rows=4,
                   reconstruction_lengths=(4, 8), reconstruction_per_length=2),
    "quick": Suite("quick", QUICK, max_length=192, mmlu_limit=100),
    # for choosing between close models: every local task (seven: two more kinds of text and task), every
    # row the data has, 400 MMLU questions, 32 texts per reconstruction length
    "wide": Suite("wide", WIDE, max_length=192, mmlu_limit=400, tasks=LOCAL_TASK_NAMES, reconstruction_per_length=32),
    "full": Suite("full", FULL, max_length=512, mmlu_limit=None, perplexity_rows=628, news_rows=400,
                  reconstruction_lengths=(8, 16, 32, 64, 128), reconstruction_per_length=32),
}
NEWS_RECONSTRUCTION_TEXTS = 200  # BBC News articles the news reconstruction cuts its texts from
PACKAGES = ("torch", "transformers", "peft", "mteb", "lm_eval", "sentence-transformers", "numpy")


def provenance(extra: dict | None = None) -> dict:
    """Package versions, git commit (and whether the tree was dirty), machine."""
    root = PROJECT_ROOT

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    return {"packages": versions, "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "python": platform.python_version(), "machine": platform.machine(), "processor": cpu_model(),
            **(extra or {})}


def default_poolings(name: str, gem) -> list[str]:
    if gem is None:
        return ["encoder"]
    return ["gem"] if gem.is_gem else ["mean"]


def run_suite(model: str, poolings: list[str] | None = None, suite: str | Suite = "quick", seed: int = 0,
              label: str | None = None, data_dir=None, heldout: str = "data/build/wiki/heldout.jsonl",
              skip: tuple = (), batch_size: int = 16, rows: dict | None = None,
              partial: str | Path | None = None, device: str | None = None, dtype: str | None = None) -> dict:
    """Evaluate one model with one or more poolings; returns the result dict (see report.py).

    model: a registry name, checkpoint folder or HF folder (a decoder: every part runs), or an
    encoder name from `lab.weights.encoders.ENCODERS` / a sentence-transformers folder (embedding tasks only).
    skip: any of "embedding", "mmlu", "perplexity", "perplexity_ood", "reconstruction" (Wikipedia and
    news), "reconstruction_news".
    partial: a file where each finished part is saved (atomically) as it completes; a rerun with
    the same model, suite and seed reuses those parts, pooling by pooling (an interrupted
    evaluation resumes).
    device, dtype: where and in which precision a decoder runs (default: `lab.load`'s, i.e. CUDA in bf16
    when there is a GPU, else the CPU's fast dtype); dtype="float32" for numbers comparable across machines.
    """
    import random

    import numpy as np
    import torch

    from ..weights.encoders import ENCODERS

    suite = SUITES[suite] if isinstance(suite, str) else suite
    if "embedding" not in skip:
        from .mteb_by_name import check_data

        check_data(suite.tasks)  # mteb's own tasks: their data now, or fail before a model loads
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    t0 = time.perf_counter()
    is_encoder = model in ENCODERS or (Path(model) / "modules.json").is_file()
    gem = None if is_encoder else load(model, dtype=dtype, device=device)
    timings = {"load": time.perf_counter() - t0}
    poolings = poolings or default_poolings(model, gem)
    result = {"model": model, "label": label or Path(model).name or model, "suite": suite.name, "seed": seed,
              "rows": [], "mmlu": None, "perplexity": None, "perplexity_ood": None, "reconstruction": None,
              "reconstruction_news": None}
    key = json.dumps([model, weights_fingerprint(model), dataclasses.asdict(suite), seed, heldout, _file_stamp(heldout)]
                     + ([str(gem.dtype)] if gem is not None else []), sort_keys=True,
                     default=str)  # parts are per pooling and dtype; another model's (or a re-export's) partial is ignored
    progress = _Progress(partial, key)
    if "embedding" not in skip:
        local = any(t in LOCAL_TASK_NAMES for t in suite.tasks)
        rows = rows if rows is not None or not local else task_rows(suite.sizes, data_dir)
        for pooling in poolings:
            row, timings[f"embedding:{pooling}"] = progress.run(
                f"embedding:{pooling}", lambda p=pooling: _embedding_row(model, gem, p, suite, rows, batch_size))
            result["rows"].append(row)
            log.info("%s %s: %s", result["label"], pooling, {k: round(v, 4) for k, v in row["tasks"].items()})
    if gem is not None:
        for part, compute in _language_parts(gem, suite, heldout, seed, data_dir).items():
            if part in skip or (part.startswith("reconstruction") and (not gem.is_gem or "reconstruction" in skip)):
                continue
            result[part], timings[part] = progress.run(part, compute)
    timings["total"] = time.perf_counter() - t0
    result["timings_s"] = timings
    result["provenance"] = provenance({"suite": dataclasses.asdict(suite), "weights": weights_fingerprint(model),
                                       "gem_config": dataclasses.asdict(gem.gem_config) if gem is not None and gem.gem_config else None,
                                       "dtype": str(gem.dtype) if gem is not None else "float32"})
    return result


def _file_stamp(path: str) -> list:
    """(size, mtime) of a data file, so a rebuilt held-out set never resumes the old one's parts."""
    try:
        st = Path(path).stat()
    except OSError:
        return []
    return [st.st_size, st.st_mtime_ns]


def _embedding_row(model: str, gem, pooling: str, suite: Suite, rows: dict, batch_size: int) -> dict:
    """{"pooling", "tasks": {task: score}, "embedding_avg", "texts_embedded"} of one readout."""
    from .embedders import gem_embedder, sentence_transformer_embedder

    emb = (sentence_transformer_embedder(model) if gem is None
           else gem_embedder(gem, pooling, batch_size=batch_size, max_length=suite.max_length))
    scores = run_tasks(emb, build_tasks(suite.sizes, rows, suite.tasks))
    return {"pooling": pooling, "tasks": scores, "embedding_avg": sum(scores.values()) / len(scores),
            "texts_embedded": emb.texts_embedded,
            "kmeans_draws": {t: suite.sizes.kmeans_draws for t in scores if t in LOCAL_CLUSTERING_TASKS}}


def _language_parts(gem, suite: Suite, heldout: str, seed: int, data_dir) -> dict:
    """{part: () -> value} for the language side: perplexity on held-out Wikipedia (the training
    domain) and on news (out of domain), reconstruction (held-out Wikipedia and BBC News), MMLU."""
    from ..corpora.eval_sets import news_texts
    from .language import heldout_perplexity, reconstruction_by_length, text_perplexity
    from .mmlu import mmlu

    return {
        "perplexity": lambda: heldout_perplexity(gem, heldout, max_rows=suite.perplexity_rows),
        "perplexity_ood": lambda: text_perplexity(gem, news_texts(suite.news_rows, data_dir),
                                                  max_tokens=suite.news_max_tokens),
        "reconstruction": lambda: reconstruction_by_length(
            gem, heldout, suite.reconstruction_lengths, suite.reconstruction_per_length,
            num_beams=suite.reconstruction_beams),
        "reconstruction_news": lambda: reconstruction_by_length(  # text of another domain than training's
            gem, news_texts(NEWS_RECONSTRUCTION_TEXTS, data_dir), suite.reconstruction_lengths,
            suite.reconstruction_per_length, num_beams=suite.reconstruction_beams),
        "mmlu": lambda: mmlu(gem, num_fewshot=suite.mmlu_fewshot, limit=suite.mmlu_limit, seed=seed,
                             data_dir=data_dir),
    }


class _Progress:
    """The finished parts of an evaluation, saved to the `partial` file as each one completes."""

    def __init__(self, partial, key: str):
        self.partial, self.key = partial, key
        self.done = _load_partial(partial, key).get("parts", {})
        if self.done:
            log.info("resuming from %s: %s already done", partial, ", ".join(sorted(self.done)))

    def run(self, part: str, compute) -> tuple[object, float]:
        """(value, seconds) of `part`: from an earlier interrupted run if saved, else computed and saved."""
        if "value" in self.done.get(part, {}):
            return self.done[part]["value"], self.done[part]["seconds"]
        t = time.perf_counter()
        value = compute()
        self.done[part] = {"value": value, "seconds": time.perf_counter() - t}
        if self.partial:
            write_json_atomic(Path(self.partial), {"key": self.key, "parts": self.done})
        return value, self.done[part]["seconds"]


def _load_partial(path, key: str) -> dict:
    """The parts saved by an interrupted run with the same settings ({} when none or different)."""
    if not path or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable partial results %s", path)
        return {}
    if data.get("key") != key:
        log.warning("ignoring %s: it was made with other settings", path)
        return {}
    return {"parts": data.get("parts", {})}


LANGUAGE_PARTS = ("mmlu", "perplexity", "perplexity_ood", "reconstruction", "reconstruction_news")


def updated_result(old: dict, new: dict) -> dict:
    """`old` (a result file's dict) with what `new` measured of the same model in the same suite: each
    of `new`'s task scores replaces the old one in the same pooling's row (the row's average taken again
    over all its tasks), each language part `new` has replaces the old one, and the update is recorded
    in `provenance["updates"]` (commit, machine, what was measured, timings). The rest stays as measured.

    For a change that touches some tasks or parts (a scoring fix, a rebuilt data file): rerun those
    only (`lab eval --update --tasks ... --skip ...`). Refuses (ValueError) a different model, weights,
    suite, seed or dtype, a pooling or task the file does not have.
    """
    check_update(old, new["model"], new["suite"], new["seed"], {t for r in new["rows"] for t in r["tasks"]})
    po, pn = old.get("provenance", {}), new["provenance"]
    if po.get("dtype") != pn.get("dtype"):
        _mismatch("dtype (--dtype float32 or bfloat16 chooses it)", po.get("dtype"), pn.get("dtype"))
    if po.get("weights") and po["weights"] != pn["weights"]:
        _mismatch("weights fingerprint (the model was retrained or re-exported)", po["weights"], pn["weights"])
    out = json.loads(json.dumps(old))
    rows = {r["pooling"]: r for r in out["rows"]}
    for row in new["rows"]:
        if row["pooling"] not in rows:
            _mismatch("poolings", sorted(rows), row["pooling"])
        target = rows[row["pooling"]]
        target["tasks"].update(row["tasks"])  # check_update: the row has each of them
        target["kmeans_draws"] = {**row_kmeans_draws(target), **row.get("kmeans_draws", {})}
        target["embedding_avg"] = sum(target["tasks"].values()) / len(target["tasks"])
    measured = [p for p in LANGUAGE_PARTS if new.get(p) is not None]
    out.update({p: new[p] for p in measured})
    out.setdefault("provenance", {}).setdefault("updates", []).append({
        "tasks": sorted({t for r in new["rows"] for t in r["tasks"]}), "poolings": [r["pooling"] for r in new["rows"]],
        "parts": measured, "timings_s": new["timings_s"], "date": time.strftime("%Y-%m-%d"),
        **{k: pn.get(k) for k in ("commit", "dirty", "processor", "machine", "packages", "suite", "weights")}})
    if pn.get("weights"):
        out["provenance"]["weights"] = pn["weights"]
    return out


def check_update(old: dict, model: str, suite: str, seed: int, tasks) -> None:
    """Refuse (ValueError), before anything is measured, an update of `old` by another model, suite or
    seed, or with tasks the file's rows have no score for."""
    for key, value in (("model", model), ("suite", suite), ("seed", seed)):
        if old.get(key) != value:
            _mismatch(key, old.get(key), value)
    for row in old.get("rows", []):
        missing = sorted(set(tasks) - set(row["tasks"]))
        if missing:
            raise ValueError(f"--update: the file has no score for {missing} (pooling {row['pooling']}); an update "
                             f"replaces scores, it does not add tasks to an average (write a new file instead)")


def _mismatch(what, a, b):
    raise ValueError(f"--update: the file's {what} is {a!r}, this run's {b!r}; an update must measure the same "
                     f"model the same way (or write a new file: --force replaces it)")


def save_result(result: dict, path: str | Path, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it, or choose another --output")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    return path

