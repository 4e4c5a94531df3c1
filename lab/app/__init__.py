"""Layer 6 — the Gradio app (base vs GEM): `handlers` (plain functions, tested directly) and
`ui` (Gradio wiring)."""
