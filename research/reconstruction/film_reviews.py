"""The stop issue's own measurement, rerun: reconstruction of film-review snippets by stages 2 to 6 of the shipped model.

    python -m research.reconstruction.film_reviews      # fp32; 17-20 min a model on a 2-core CPU beside another evaluation

Issue #32 measured the shipped model (then stage 2) on 40 film-review snippets cut to 8 tokens: text
that is neither Wikipedia (the training text) nor news (the lab's second reconstruction source). This
reruns that measurement on the Pang & Lee movie-review sentences of the gensim wheel (the transfer
tasks' data, never used for training or for choosing a recipe): for each model of `MODELS`, the first
`PER_LENGTH` sentences long enough, cut to 8, 16 and 32 tokens, decoded from S alone as each model's
`reconstruct()` decodes (greedy; stage 6: 8 beams, its `reconstruct_beams`) with
`lab.evaluation.language.reconstruction_by_length` (exact first n, exact with a stop, token accuracy,
stops), plus what `reconstruct()` hands a user for the first `EXAMPLES` 8-token snippets.
Writes `research/reconstruction/results/stop/film-reviews.json` and `.md`; a model's row is reused
while its weights are unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging

from lab.storage import atomic_file
from ..rows import rows_per_weights
from .budget import RESULTS

log = logging.getLogger(__name__)

MODELS = {"stage 2 (gem-smollm2-135m-anchored, before the stop)": "gem-smollm2-135m-anchored",
          "stage 3 (gem-smollm2-135m-stop, the stop)": "gem-smollm2-135m-stop",
          "stage 4 (gem-smollm2-135m-contrast: the stop, then 40 contrastive steps)": "gem-smollm2-135m-contrast",
          "stage 5 (gem-smollm2-135m-mixed: rank 32, copies on a wider corpus)": "gem-smollm2-135m-mixed",
          "stage 6 (gem-smollm2-135m, shipped: rank 64 stored at 36)": "gem-smollm2-135m"}
LENGTHS = (8, 16, 32)
PER_LENGTH = 40
EXAMPLES = 8
OUT = RESULTS / "stop" / "film-reviews"


def film_review_texts() -> list[str]:
    """The Pang & Lee movie-review sentences, in the file's order."""
    from lab.evaluation.transfer import transfer_data

    return list(transfer_data()["Pang-Lee sentiment"][0])


def model_row(model: str, texts: list[str], lengths=LENGTHS, per_length: int = PER_LENGTH,
              examples: int = EXAMPLES, num_beams: int | None = None) -> dict:
    """{"reconstruction": reconstruction_by_length's dict, "examples": [{"text", "reconstruct"}]} of one
    model, in fp32 (the numbers compare across CPUs); greedy (1), beam search (> 1), or None: as the
    model's `reconstruct()` decodes by default."""
    from lab.evaluation.language import _texts_of_length, reconstruction_by_length
    from lab.weights.loading import load

    gem = load(model, dtype="float32")
    rec = reconstruction_by_length(gem, texts, lengths, per_length, num_beams=num_beams)
    rec = json.loads(json.dumps(rec))  # int keys -> str, as saved
    shown = [gem.tokenizer.decode(ids) for ids in _texts_of_length(gem, texts, lengths[0], examples)]
    return {"reconstruction": rec,
            "examples": [{"text": t, "reconstruct": gem.reconstruct(t, num_beams=num_beams)} for t in shown]}


def measure(models=MODELS, out=OUT, lengths=LENGTHS, per_length: int = PER_LENGTH, row=model_row) -> dict:
    """{"settings", "rows": {label: {"model", "fingerprint", "reconstruction", "examples"}}}, written
    to `out`.json / .md after each model."""
    settings = {"source": "gensim test_data/pang_lee_polarity.cor", "lengths": list(lengths),
                "per_length": per_length, "dtype": "float32"}
    texts = film_review_texts()
    result = rows_per_weights(out.with_suffix(".json"), settings, models,
                              lambda model: row(model, texts, lengths, per_length), "film reviews")
    with atomic_file(out.with_suffix(".md"), "w") as f:
        f.write(report(result))
    return result


def report(result: dict) -> str:
    """Markdown: one row per model ("exact first n / exact with a stop / token accuracy" per length, and
    the share that stops), then each model's decodes of the first 8-token snippets."""
    s = result["settings"]
    lengths = [str(n) for n in s["lengths"]]
    lines = [f"## Reconstruction of film-review snippets ({s['per_length']} per length, from S alone, {s['dtype']})",
             "", "Pang & Lee movie-review sentences (gensim wheel; never trained on), cut to n tokens. "
             "Each cell: exact first n / **exact with a stop** / token accuracy, in %; stops: decodes that end "
             "(EOS) within n + 8 tokens. Greedy, unless a row says beam search (`reconstruct(num_beams=...)`). "
             "`python -m research.reconstruction.film_reviews`.", "",
             "| model | " + " | ".join(f"{n} tok" for n in lengths) + " | stops at " + " / ".join(lengths) + " |",
             "|---|" + "---:|" * (len(lengths) + 1)]
    for label, row in result["rows"].items():
        rec = row["reconstruction"]
        cells = [f"{100 * rec['exact'][n]:.0f} / **{100 * rec['exact_with_stop'][n]:.0f}** / "
                 f"{100 * rec['token_accuracy'][n]:.1f}" for n in lengths]
        stops = " / ".join(f"{100 * rec['stopped'][n]:.0f}" for n in lengths)
        counts = sorted({rec["count"][n] for n in lengths})
        note = "" if counts == [s["per_length"]] else f" ({'/'.join(str(rec['count'][n]) for n in lengths)} texts)"
        beams = rec.get("num_beams", 1)
        note += f" ({beams} beams)" if beams > 1 else ""
        lines.append(f"| {label}{note} | " + " | ".join(cells) + f" | {stops} |")
    for label, row in result["rows"].items():
        lines += ["", f"**{label}**, `reconstruct()` with no cap given, the first {len(row['examples'])} "
                  f"{lengths[0]}-token snippets:", "", "| snippet | reconstruct() |", "|---|---|"]
        lines += [f"| {_cell(e['text'])} | {_cell(e['reconstruct'])} |" for e in row["examples"]]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-length", type=int, default=PER_LENGTH)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    print(report(measure(per_length=args.per_length)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
