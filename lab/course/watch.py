"""Watch S learn to carry text: an `evaluate` callback for `lab.training.train` that rebuilds texts
from the GEM tokens' cache alone, for notebook 3's first run (`configs/course-watch-s.yaml`).

    probe = ReconstructionProbe.from_config(cfg)
    train(cfg, evaluate=probe, on_log=...)        # every run.eval_every steps: probe(gem) -> metrics
    Markdown(probe.table())                       # the latest attempt, text by text
"""

from __future__ import annotations

from ..storage import read_jsonl


class ReconstructionProbe:
    """Rebuilds `texts` (trained on) and `heldout` (never seen) from S; logs the share rebuilt exactly,
    stop included, as `recon_exact` and `recon_heldout_exact`."""

    def __init__(self, texts: list[str], heldout: list[str] = ()):
        self.texts, self.heldout = list(texts), list(heldout)
        self.latest: list[tuple[str, str, str]] = []  # (kind, text, rebuilt)
        self.calls = 0

    @classmethod
    def from_config(cls, cfg) -> "ReconstructionProbe":
        """The run's own corpus (what it trains on) and its held-out file."""
        return cls([r["text"] for r in read_jsonl(cfg.rows.corpus)], [r["text"] for r in read_jsonl(cfg.rows.heldout)])

    def __call__(self, gem) -> dict:
        self.calls += 1
        self.latest = [(kind, text, gem.reconstruct(text)) for kind, texts in (("trained", self.texts),
                                                                              ("held out", self.heldout))
                       for text in texts]
        def share(kind):
            rows = [(t, r) for k, t, r in self.latest if k == kind]
            return sum(r.strip() == t.strip() for t, r in rows) / max(len(rows), 1)
        return {"recon_exact": share("trained"), "recon_heldout_exact": share("held out")}

    def table(self) -> str:
        """Markdown: each text, what came back from S, and whether it came back exactly (stop included)."""
        if not self.latest:
            return "*(the first attempt comes at the first evaluation step)*"
        esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = [f"attempt {self.calls}", "", "| | text | rebuilt from S alone | exact |", "|---|---|---|:-:|"]
        lines += [f"| {kind} | {esc(text)} | {esc(rebuilt)} | {'✓' if rebuilt.strip() == text.strip() else ''} |"
                  for kind, text, rebuilt in self.latest]
        return "\n".join(lines)
