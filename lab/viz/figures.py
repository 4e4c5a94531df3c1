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


def embedding_map(coords: np.ndarray, texts: list[str], labels: list[str] | None = None, title: str = ""):
    """(n, 2) map (UMAP or any projection), one colour per label, hover shows the text."""
    go = _go()
    coords = np.asarray(coords)
    fig = go.Figure()
    groups = sorted(set(labels)) if labels else [None]
    for g, name in enumerate(groups):
        idx = [i for i in range(len(texts)) if labels is None or labels[i] == name]
        fig.add_scattergl(x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=str(name) if name else "texts",
                          marker={"size": 7, "color": PALETTE[g % len(PALETTE)], "opacity": 0.8},
                          text=[_short(texts[i]) for i in idx], hovertemplate="%{text}<extra></extra>")
    fig.update_layout(title=title, template="plotly_white", xaxis={"visible": False}, yaxis={"visible": False},
                      legend={"orientation": "h", "y": -0.05}, height=480, showlegend=labels is not None)
    return fig


def similarity_heatmap(sim: np.ndarray, texts: list[str], title: str = "cosine similarity"):
    """(n, n) cosine similarities; axes are the (shortened) texts."""
    go = _go()
    names = [f"{i}: {_short(t, 40)}" for i, t in enumerate(texts)]
    fig = go.Figure(go.Heatmap(z=sim, x=names, y=names, colorscale="RdBu", zmid=0, zmin=-1, zmax=1,
                               hovertemplate="%{y}<br>%{x}<br>cos %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, yaxis={"autorange": "reversed", "showticklabels": len(texts) <= 30},
                      xaxis={"showticklabels": False}, template="plotly_white", height=480)
    return fig


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


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
