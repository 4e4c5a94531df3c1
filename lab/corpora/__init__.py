"""Layer 3 — text: the Wikipedia training corpus, the evaluation sets (Lee-50, BBC News, MMLU),
the app's text sets, and embedding a corpus to disk. All built offline from installed packages."""
