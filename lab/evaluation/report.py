"""Results -> a Markdown table and plotly figures.

One result file (written by `lab.evaluation.suite.run_suite`) holds one model and one or more
poolings:

    {"model": ..., "suite": "quick", "rows": [{"pooling": "mean", "tasks": {task: score},
      "embedding_avg": ..}, ...], "mmlu": {...} | null, "perplexity": float | null,
      "reconstruction": {...} | null, "provenance": {..., "updates": [...]}, "timings_s": {...}}

(`provenance["updates"]`: parts and tasks measured again later, `lab eval --update`.)

`table_rows` flattens any number of result files into rows (model x pooling); `markdown_table`
and the figures read those rows, so checkpoints and ablations compare in one table.
"""

from __future__ import annotations

from pathlib import Path

from ..storage import atomic_file, read_json, write_json_atomic
from .tasks import LOCAL_CLUSTERING_TASKS, LOCAL_TASK_NAMES, QUICK, SHORT_NAMES


def load_results(paths) -> list[dict]:
    """The result files, in order. Files with the same model and label are one model's results
    split over several runs (e.g. `make eval-perplexity` after `make eval-report`): they become one
    result, the first file's values kept and each value it lacks (None or empty) taken from the
    next file that has it; `merged_from` lists the files."""
    out: list[dict] = []
    by_key: dict[tuple, dict] = {}
    for p in paths:
        res = read_json(p)
        key = (res.get("model"), res.get("label"))
        if key not in by_key:
            by_key[key] = res
            out.append(res)
            continue
        first = by_key[key]
        first.setdefault("merged_from", [])
        for field, value in res.items():
            if first.get(field) in (None, [], {}) and value not in (None, [], {}):
                first[field] = value
                first["merged_from"].append(f"{p}: {field}")
    return out


def save_json_and_markdown(stem: str | Path, data, markdown: str) -> None:
    """`stem`.json (the numbers) and `stem`.md (their table), each written atomically."""
    write_json_atomic(f"{stem}.json", data)
    with atomic_file(f"{stem}.md", "w", encoding="utf-8") as f:
        f.write(markdown)


def row_kmeans_draws(row: dict) -> dict[str, int]:
    """{clustering task: k-means fits its score averages} of one result row: the row's own record; a row
    without one was measured before the suites averaged draws, one draw each."""
    return row.get("kmeans_draws") or {t: 1 for t in row["tasks"] if t in LOCAL_CLUSTERING_TASKS}


def table_rows(results: list[dict]) -> list[dict]:
    """One dict per (model, pooling): label, tasks, embedding_avg, mmlu, perplexity."""
    rows = []
    for res in results:
        mmlu = res.get("mmlu") or {}
        # a language-only run (--skip embedding) still gets its row: MMLU and perplexity
        for r in res["rows"] or [{"pooling": "–", "tasks": {}, "embedding_avg": None}]:
            rows.append({"model": res["label"], "pooling": r["pooling"], "tasks": r["tasks"],
                         "embedding_avg": r["embedding_avg"], "mmlu": mmlu.get("acc_macro"),
                         "mmlu_acc": mmlu.get("acc"), "perplexity": res.get("perplexity"),
                         "perplexity_ood": res.get("perplexity_ood"), "suite": res.get("suite"),
                         "kmeans_draws": row_kmeans_draws(r)})
    return rows


def result_tasks(rows: list[dict]) -> list[str]:
    """The tasks the rows have scores for: the local ones in their order, then mteb's (`--mteb`) as first seen."""
    seen = [t for t in LOCAL_TASK_NAMES if any(t in r["tasks"] for r in rows)]
    for r in rows:
        seen += [t for t in r["tasks"] if t not in seen]
    return seen


def _fmt(x, scale=100.0, digits=1) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


def markdown_table(rows: list[dict], language: bool = True) -> str:
    """Rows model x pooling; columns: each task (x100), embedding average, and with `language` MMLU
    (x100) and both perplexities."""
    tasks = result_tasks(rows)
    extra = ["MMLU", "ppl (Wikipedia, in-domain)", "ppl (news, out-of-domain)"] if language else []
    head = ["model", "pooling", *[SHORT_NAMES.get(t, t) for t in tasks], "emb. avg", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    one_draw = False
    for r in rows:
        marks = {t: "¹" for t, n in r.get("kmeans_draws", {}).items() if n == 1}
        one_draw |= bool(marks)
        cells = [r["model"], r["pooling"], *[_fmt(r["tasks"].get(t)) + marks.get(t, "") for t in tasks],
                 _fmt(r["embedding_avg"])]
        if language:
            cells += [_fmt(r["mmlu"]), *("–" if r.get(k) is None else f"{r[k]:.2f}" for k in ("perplexity", "perplexity_ood"))]
        lines.append("| " + " | ".join(cells) + " |")
    if one_draw:
        lines += ["", f"¹ one k-means draw (mteb's seed 42), measured before the clustering scores were the mean of "
                  f"{QUICK.kmeans_draws} draws; one draw moves a headline clustering score by about ±4.5 points."]
    return "\n".join(lines) + "\n"


def reconstruction_table(results: list[dict], key: str = "reconstruction") -> str:
    """Reconstruction (%) by input length, "exact / exact with a stop / token accuracy" per cell, for
    every result that has `key` ("reconstruction": held-out Wikipedia; "reconstruction_news": BBC News).

    exact: the first n decoded tokens are the text; with a stop: the text and then EOS, what
    `reconstruct()` hands a user ("–" for results from before it was measured). A result decoded with
    beam search says so after its label."""
    have = [(r["label"] + (f" (beam {r[key]['num_beams']})" if r[key].get("num_beams", 1) > 1 else ""), r[key])
            for r in results if r.get(key)]
    if not have:
        return ""
    lengths = sorted({int(n) for _, rec in have for n in rec["exact"]})
    lines = ["| model | " + " | ".join(f"{n} tok" for n in lengths) + " |", "|---|" + "---:|" * len(lengths)]
    for label, rec in have:
        ex, stop, tok = ({int(n): v for n, v in rec.get(k, {}).items()}
                         for k in ("exact", "exact_with_stop", "token_accuracy"))
        lines.append(f"| {label} | " + " | ".join(
            f"{_fmt(ex.get(n), 100, 0)} / {_fmt(stop.get(n), 100, 0)} / {_fmt(tok.get(n), 100, 1)}"
            for n in lengths) + " |")
    return "\n".join(lines) + "\n"


RECONSTRUCTION_SOURCES = {"reconstruction": "held-out Wikipedia, the training domain",
                          "reconstruction_news": "BBC News, another domain"}


def _base_of(result: dict, bases: list[dict]) -> dict | None:
    """The base-model result a GEM result is measured against: the one of its own backbone
    (`provenance.gem_config.base_model` = the base result's `model`); None when that backbone has no
    result here; the first base for results that do not name a backbone (older files)."""
    backbone = ((result.get("provenance") or {}).get("gem_config") or {}).get("base_model")
    if backbone is None:
        return bases[0]
    return next((b for b in bases if b.get("model") == backbone), None)


def language_cost_table(results: list[dict]) -> str:
    """Each GEM decoder's MMLU and perplexity change against its own base model (a result with no
    GEM config, of the backbone its `gem_config.base_model` names; else the first such result).

    MMLU differences are paired (the same questions, see `mmlu.paired_difference`), +- one standard
    error, in points; perplexity change in %. Empty when fewer than two results have MMLU or perplexity.
    """
    from .mmlu import paired_difference

    have = [r for r in results if r.get("mmlu") or r.get("perplexity")]
    bases = [r for r in have if not (r.get("provenance") or {}).get("gem_config")] or have[:1]
    if len(have) < 2:
        return ""
    lines = ["Each model against its own base model, on the same questions:", "",
             "| model | against | questions | MMLU acc (Δ points ± SE) | P(right letter) (Δ points ± SE) | in-domain perplexity, Wikipedia (Δ %) | out-of-domain perplexity, news (Δ %) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    shown = set()
    for r in have:
        base = _base_of(r, bases)
        known_base = "provenance" in r and not (r["provenance"] or {}).get("gem_config")
        if base is None or r is base or r["label"] == base["label"] or known_base or r["label"] in shown:
            continue  # no base of its backbone here, a base model, or a model already shown: not a cost
        shown.add(r["label"])
        acc, prob = paired_difference(base["mmlu"], r["mmlu"], "acc"), paired_difference(base["mmlu"], r["mmlu"], "p_correct")
        cells = [r["label"], base["label"], str(acc["n"]) if acc else "–", _delta(acc), _delta(prob)]
        for key in ("perplexity", "perplexity_ood"):
            pa, pb = base.get(key), r.get(key)
            cells.append("–" if not (pa and pb) else f"{100 * (pb / pa - 1):+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _delta(d: dict | None) -> str:
    return "– (no per-question scores)" if d is None else f"{100 * d['diff']:+.1f} ± {100 * d['stderr']:.1f}"


def task_bars(rows: list[dict]):
    """plotly Figure: grouped bars, one group per task (+ average), one bar per model x pooling."""
    import plotly.graph_objects as go

    tasks = result_tasks(rows)
    names = [SHORT_NAMES.get(t, t) for t in tasks] + ["emb. avg"]
    fig = go.Figure()
    for r in (r for r in rows if r["embedding_avg"] is not None):
        ys = [r["tasks"].get(t) for t in tasks] + [r["embedding_avg"]]
        fig.add_bar(name=f"{r['model']} · {r['pooling']}", x=names, y=[None if y is None else 100 * y for y in ys])
    fig.update_layout(barmode="group", yaxis_title="main score (x100)", title="Embedding tasks",
                      legend_title="model · pooling", template="plotly_white")
    return fig


def tradeoff_scatter(rows: list[dict], language: str = "mmlu"):
    """plotly Figure: embedding average (x) vs MMLU or perplexity (y), one point per row."""
    import plotly.graph_objects as go

    key, title = ("mmlu", "MMLU (macro, x100)") if language == "mmlu" else ("perplexity", "held-out perplexity")
    pts = [r for r in rows if r[key] is not None and r["embedding_avg"] is not None]
    fig = go.Figure()
    for r in pts:
        y = 100 * r[key] if key == "mmlu" else r[key]
        fig.add_scatter(x=[100 * r["embedding_avg"]], y=[y], mode="markers+text", name=f"{r['model']} · {r['pooling']}",
                        text=[f"{r['model']} · {r['pooling']}"], textposition="top center", marker={"size": 12})
    fig.update_layout(xaxis_title="embedding average (x100)", yaxis_title=title, showlegend=False,
                      title="What GEM buys (x) and what it costs (y)", template="plotly_white")
    return fig


def write_report(results: list[dict], out: str | Path) -> Path:
    """`out`.md (tables) plus `out`_tasks.html and `out`_tradeoff.html (plotly, offline-viewable)."""

    out = Path(out)
    rows = table_rows(results)
    text = "## Embedding tasks, MMLU and perplexity\n\n" + markdown_table(rows)
    cost = language_cost_table(results)
    if cost:
        text += "\n## What it costs the language model\n\n" + cost
    for key, source in RECONSTRUCTION_SOURCES.items():
        recon = reconstruction_table(results, key)
        if recon:
            text += (f"\n## Reconstruction by input length, {source} (%: exact match of the first n tokens / "
                     "exact with a stop / token accuracy; greedy unless a row says beam N; from the GEM tokens' cache alone)\n\n" + recon)
    with atomic_file(out.with_suffix(".md"), "w") as f:
        f.write(text)
    for suffix, fig in (("_tasks.html", task_bars(rows)), ("_tradeoff.html", tradeoff_scatter(rows))):
        with atomic_file(out.with_name(out.stem + suffix), "w") as f:
            f.write(fig.to_html(include_plotlyjs=True, full_html=True))
    return out.with_suffix(".md")
