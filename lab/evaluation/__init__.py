"""Layer 4 — evaluation: mteb tasks on local data, MMLU through lm-eval, perplexity and
reconstruction, the quick eval logged during training, and the report (Markdown + plotly)."""
