"""Transfer tasks outside the suite: does an embedding's quality carry beyond the lab's news and
Wikipedia tasks? Three sets from the gensim wheel, never used for training or for choosing a recipe:

    WordSim-353   353 word pairs, human relatedness      Spearman of cos(word_1, word_2)
    SimLex-999    999 word pairs, human similarity       Spearman of cos(word_1, word_2)
    Pang & Lee    200 movie-review sentences, pos / neg  5-fold logistic-regression accuracy,
                                                         the mean over 50 stratified splits

    python -m lab.evaluation.transfer [--out results/transfer]     # base (mean, echo), GEM (its six stages), MiniLM

Scores are x100 like the suite's. The sentences are short and the words single tokens or two, so
all of it runs in about a minute per model and pooling on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from ..corpora.eval_sets import transfer_data
from .embedders import Embedder

log = logging.getLogger(__name__)

TRANSFER_TASKS = ("WordSim-353", "SimLex-999", "Pang-Lee sentiment")




def word_similarity(embedder: Embedder, pairs: list[tuple[str, str, float]]) -> float:
    """Spearman correlation between cos(e(w1), e(w2)) and the human scores."""
    from scipy.stats import spearmanr

    a = embedder.embed([p[0] for p in pairs])
    b = embedder.embed([p[1] for p in pairs])
    return float(spearmanr((a * b).sum(-1), [p[2] for p in pairs]).statistic)


SENTIMENT_SPLITS = tuple(range(50))  # split seeds: one split of 200 sentences moves a score by +- 1.5-2 points
# (sd; research/wide/sentiment_splits.md), as one k-means draw moves a clustering score


def sentiment_right(x: np.ndarray, labels, folds: int = 5, seeds=SENTIMENT_SPLITS) -> np.ndarray:
    """(len(seeds), n) bool: whether each text's out-of-fold prediction is right, per split seed (a logistic
    regression on the embeddings `x` (n, d), stratified `folds`-fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.asarray(labels)
    return np.asarray([cross_val_predict(LogisticRegression(max_iter=2000), x, y,
                                         cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)) == y
                       for seed in seeds])


def sentiment_accuracy(embedder: Embedder, texts: list[str], labels: list[int], folds: int = 5,
                       seeds=SENTIMENT_SPLITS) -> float:
    """Accuracy of a logistic regression on the embeddings, stratified `folds`-fold, averaged over the
    splits of `seeds` (the texts are embedded once; every text is predicted once per split)."""
    return float(sentiment_right(embedder.embed(texts), labels, folds, seeds).mean())


def transfer_embedder(name: str, pooling: str | None, dtype: str = "float32", loaded: dict | None = None) -> Embedder:
    """The table's embedder of one row: the encoder for an encoder name ('minilm'; `pooling` unused), else
    the LLM `name` (kept in `loaded`, so each is loaded once) with `pooling` (None: GEM's readout for a GEM
    checkpoint)."""
    from ..weights.encoders import ENCODERS
    from ..weights.loading import load
    from .embedders import gem_embedder, sentence_transformer_embedder

    if name in ENCODERS:
        return sentence_transformer_embedder(name)
    loaded = {} if loaded is None else loaded
    if name not in loaded:
        loaded[name] = load(name, dtype=dtype)
    return gem_embedder(loaded[name], pooling or None)


def transfer_scores(embedder: Embedder) -> dict[str, float]:
    """{task: score in [0, 1]} for one embedder."""
    data = transfer_data()
    return {"WordSim-353": word_similarity(embedder, data["WordSim-353"]),
            "SimLex-999": word_similarity(embedder, data["SimLex-999"]),
            "Pang-Lee sentiment": sentiment_accuracy(embedder, *data["Pang-Lee sentiment"])}


def transfer_table(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    """Markdown: one row per (model, pooling, scores), with the average."""
    head = "| model | pooling | " + " | ".join(TRANSFER_TASKS) + " | avg |\n|---|---|" + "---:|" * (len(TRANSFER_TASKS) + 1)
    lines = [head]
    for model, pooling, scores in rows:
        vals = [100 * scores[t] for t in TRANSFER_TASKS]
        lines.append(f"| {model} | {pooling} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {np.mean(vals):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ..weights.encoders import ENCODERS
    from .report import save_json_and_markdown

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2-135m:mean,smollm2-135m:echo,gem-smollm2-135m:gem,gem-smollm2-135m-mixed:gem,gem-smollm2-135m-contrast:gem,gem-smollm2-135m-stop:gem,gem-smollm2-135m-anchored:gem,gem-smollm2-135m-gpu:gem,minilm:encoder",
                   help="comma-separated MODEL:POOLING (an encoder name takes 'encoder')")
    p.add_argument("--out", default="results/transfer", help="writes OUT.json and OUT.md")
    p.add_argument("--dtype", default="float32",
                   help="of the LLMs (default float32, as the README's other tables; bfloat16 is faster on a CPU with native bf16)")
    args = p.parse_args(argv)
    rows, loaded = [], {}
    for spec in args.models.split(","):
        name, _, pooling = spec.partition(":")
        scores = transfer_scores(transfer_embedder(name, pooling, args.dtype, loaded))
        log.info("%s %s: %s", name, pooling, scores)
        print(name, pooling, {k: round(100 * v, 1) for k, v in scores.items()}, flush=True)
        rows.append((name, pooling, scores))
    dtype_of = lambda m: "float32" if m in ENCODERS else args.dtype  # noqa: E731 (sentence-transformers loads fp32)
    md = ("## Transfer tasks outside the suite (x100; `python -m lab.evaluation.transfer`)\n\n"
          "Word similarity (Spearman) and sentiment (5-fold logistic regression accuracy, the mean over "
          f"{len(SENTIMENT_SPLITS)} splits), from the gensim "
          "wheel; never used for training or for choosing the recipe.\n\n" + transfer_table(rows))
    save_json_and_markdown(args.out, [{"model": m, "pooling": p, "scores": s, "dtype": dtype_of(m),
                                       "sentiment_splits": len(SENTIMENT_SPLITS)}
                                      for m, p, s in rows], md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
