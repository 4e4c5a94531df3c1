"""Plotly figures shared by the notebooks and the app: masks, attention, embedding maps, similarity.

Every function takes plain arrays and labels (no model), returns a `plotly.graph_objects.Figure`,
and never shows it: callers display (`fig.show()`, `gr.Plot`) or save (`fig.write_html`).
"""

from __future__ import annotations

import numpy as np

ROLE_COLOURS = {"pad": "#d0d0d0", "bos": "#7f7f7f", "prefix": "#1f77b4", "special": "#d62728", "suffix": "#2ca02c"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def _go():
    import plotly.graph_objects as go

    return go


def readable_tokens(tokens: list[str]) -> list[str]:
    """Unique, visible axis labels: '3·▁the' (index, token with spaces shown as ▁, newlines as ⏎)."""
    return [f"{i}·{t.replace(' ', '▁').replace(chr(10), '⏎') or '∅'}" for i, t in enumerate(tokens)]


def mask_figure(mask: np.ndarray, tokens: list[str], roles: list[str], title: str = "GEM attention mask"):
    """(T, T) bool mask as a grid: a cell is coloured by the *key's* role where attention is
    allowed, white where blocked. Rows are queries, columns keys (as in gem-method.md §2)."""
    go = _go()
    labels = readable_tokens(tokens)
    names = list(ROLE_COLOURS)
    code = np.array([names.index(r) + 1 for r in roles])
    z = np.where(np.asarray(mask, bool), code[None, :], 0).astype(float)
    colours = ["#ffffff"] + [ROLE_COLOURS[n] for n in names]
    n = len(colours)
    scale = []
    for i, c in enumerate(colours):
        scale += [[i / n, c], [(i + 1) / n, c]]
    hover = [[f"query {labels[i]} ({roles[i]})<br>key {labels[j]} ({roles[j]})<br>"
              f"{'attends' if mask[i][j] else 'blocked'}" for j in range(len(labels))] for i in range(len(labels))]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale=scale, zmin=0, zmax=n, showscale=False,
                               hovertext=hover, hoverinfo="text", xgap=1, ygap=1))
    for name in names[1:]:  # a legend of roles
        if name in roles:
            fig.add_scatter(x=[None], y=[None], mode="markers", marker={"color": ROLE_COLOURS[name], "size": 10,
                                                                         "symbol": "square"}, name=name)
    fig.update_layout(title=title, yaxis={"autorange": "reversed"}, xaxis={"side": "top", "tickangle": -60},
                      template="plotly_white", height=max(360, 18 * len(labels) + 160),
                      legend={"orientation": "h", "y": -0.05})
    return fig


def attention_figure(weights: np.ndarray, tokens: list[str], title: str, mask: np.ndarray | None = None):
    """(T, T) attention weights of one head (rows: queries). Blocked cells (mask False) are blank."""
    go = _go()
    labels = readable_tokens(tokens)
    z = np.asarray(weights, dtype=float).copy()
    if mask is not None:
        z[~np.asarray(mask, bool)] = np.nan
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale="Viridis", zmin=0, zmax=float(np.nanmax(z)) or 1,
                               hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, yaxis={"autorange": "reversed"}, xaxis={"side": "top", "tickangle": -60},
                      template="plotly_white", height=max(360, 18 * len(labels) + 160))
    return fig


def embedding_map(coords: np.ndarray, texts: list[str], labels: list[str] | None = None, title: str = "",
                  highlight: list[int] | None = None, query: tuple[float, float] | None = None):
    """(n, 2) map (UMAP or any projection), one colour per label, hover shows the text.

    highlight: indices to ring (e.g. a search's top-k, numbered by rank); query: where to draw the
    query itself (a star; e.g. the mean position of its neighbours)."""
    go = _go()
    coords = np.asarray(coords)
    fig = go.Figure()
    groups = sorted(set(labels)) if labels else [None]
    dim = 0.35 if highlight else 0.8
    for g, name in enumerate(groups):
        idx = [i for i in range(len(texts)) if labels is None or labels[i] == name]
        fig.add_scattergl(x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=str(name) if name else "texts",
                          marker={"size": 7, "color": PALETTE[g % len(PALETTE)], "opacity": dim},
                          text=[_short(texts[i]) for i in idx], hovertemplate="%{text}<extra></extra>")
    if highlight:
        fig.add_scatter(x=coords[highlight, 0], y=coords[highlight, 1], mode="markers+text", name="top-k",
                        text=[str(r + 1) for r in range(len(highlight))], textposition="top center",
                        marker={"size": 15, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 2.5}},
                        hovertext=[f"#{r + 1}: {_short(texts[i])}" for r, i in enumerate(highlight)],
                        hoverinfo="text")
    if query is not None:
        fig.add_scatter(x=[query[0]], y=[query[1]], mode="markers", name="query",
                        marker={"size": 20, "symbol": "star", "color": "gold", "line": {"color": "black", "width": 1}})
    fig.update_layout(title=title, template="plotly_white", xaxis={"visible": False}, yaxis={"visible": False},
                      legend={"orientation": "h", "y": -0.05}, height=480,
                      showlegend=labels is not None or bool(highlight), margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def similarity_heatmap(sim: np.ndarray, texts: list[str], title: str = "cosine similarity",
                       labels: list[str] | None = None):
    """(n, n) cosine similarities; axes are the (shortened) texts, prefixed by their label if any.
    The colour scale spans the data's own range (off-diagonal), so differences between 0.6 and 0.95
    are visible; sort the texts by label first to see topic blocks (`label_sorted_sample`)."""
    go = _go()
    sim = np.asarray(sim, dtype=float)
    tags = [f"[{labels[i]}] " if labels else "" for i in range(len(texts))]
    names = [f"{i}: {tags[i]}{_short(t, 40)}" for i, t in enumerate(texts)]
    off = sim[~np.eye(len(sim), dtype=bool)] if len(sim) > 1 else sim.ravel()
    lo, hi = (float(np.percentile(off, 2)), float(np.percentile(off, 98))) if off.size else (-1.0, 1.0)
    fig = go.Figure(go.Heatmap(z=sim, x=names, y=names, colorscale="Viridis", zmin=lo, zmax=max(hi, lo + 1e-6),
                               hovertemplate="%{y}<br>%{x}<br>cos %{z:.3f}<extra></extra>",
                               colorbar={"title": "cos"}))
    fig.update_layout(title=title, yaxis={"autorange": "reversed", "showticklabels": len(texts) <= 30},
                      xaxis={"showticklabels": False}, template="plotly_white", height=480,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def label_sorted_sample(n_texts: int, labels: list[str] | None, n: int, seed: int = 0) -> list[int]:
    """Up to n of the n_texts indices, an equal share per label, grouped by label (so a similarity
    heatmap shows topic blocks); without labels, the first n."""
    if not labels:
        return list(range(min(n, n_texts)))
    rng = np.random.default_rng(seed)
    groups = sorted(set(labels))
    per = max(1, n // len(groups))
    out = []
    for g in groups:
        idx = [i for i, lab in enumerate(labels) if lab == g]
        out += sorted(rng.choice(idx, size=min(per, len(idx)), replace=False).tolist())
    return out[:n]


def curves_figure(metrics: list[dict], keys: list[str], title: str = "training"):
    """Lines of metrics.jsonl rows: one trace per key (x = step), missing values skipped."""
    go = _go()
    fig = go.Figure()
    for k in keys:
        pts = [(m["step"], m[k]) for m in metrics if m.get(k) is not None]
        if pts:
            fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=k)
    fig.update_layout(title=title, xaxis_title="step", template="plotly_white", height=380)
    return fig


def lines_figure(x: list, series: dict[str, list], title: str, x_title: str, y_title: str):
    """One line per named series over a shared x (e.g. attention shares per layer)."""
    go = _go()
    fig = go.Figure()
    for name, ys in series.items():
        fig.add_scatter(x=list(x), y=list(ys), mode="lines+markers", name=name)
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white", height=380)
    return fig


def tradeoff_figure(points: list[dict], base: dict | None = None,
                    title: str = "embedding quality vs language quality", series: str = "GEM during training",
                    lines: bool = True):
    """The trade-off: x = perplexity (lower is better), y = embedding score (higher is better), one
    point per evaluated step or run (labelled; joined by a line when `lines`), the base model as a star.

    points: [{"step" or "label", "perplexity", "score"}]; base: {"perplexity", "score", "label"}."""
    go = _go()
    fig = go.Figure()
    fig.add_scatter(x=[p["perplexity"] for p in points], y=[p["score"] for p in points],
                    mode="lines+markers+text" if lines else "markers+text",
                    text=[p.get("label", f"step {p.get('step')}") for p in points], textposition="top center", name=series)
    if base is not None:
        fig.add_scatter(x=[base["perplexity"]], y=[base["score"]], mode="markers+text", text=[base.get("label", "base")],
                        textposition="bottom center", name="base model",
                        marker={"symbol": "star", "size": 16, "color": "gold", "line": {"color": "black", "width": 1}})
    fig.update_layout(title=title, xaxis_title="held-out perplexity (lower is better)",
                      yaxis_title="embedding score (higher is better)", template="plotly_white", height=420)
    return fig


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def ablation_figure(results: list[dict], base: dict):
    """plotly Figure: embedding average (y) vs out-of-domain perplexity (x), one point per
    ablation result (`results/ablations/*.json`); the base model's best pooling as a star."""
    points = [{"label": r["ablation"]["name"], "perplexity": r.get("perplexity_ood"),
               "score": 100 * r["rows"][0]["embedding_avg"]} for r in results]
    best = max(base["rows"], key=lambda r: r["embedding_avg"])
    fig = tradeoff_figure(points, {"perplexity": base.get("perplexity_ood"), "score": 100 * best["embedding_avg"],
                                   "label": f"base · {best['pooling']}"},
                          title="Ablations at one reduced budget: embedding score vs out-of-domain perplexity",
                          series="ablations", lines=False)
    fig.update_layout(xaxis_title="perplexity on BBC News (out of domain; lower is better)",
                      yaxis_title="quick embedding average (higher is better)")
    return fig
