"""Layer 5 — pictures: plotly figures (masks, attention, maps, curves) and cached UMAP maps."""
