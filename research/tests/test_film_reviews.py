"""The film-review reconstruction: measured once per weights, on a real (tiny) GEM model, and tabulated."""

import json

from research.reconstruction.film_reviews import film_review_texts, measure, model_row
from lab.training.tiny_run import tiny_gem_checkpoint


def test_film_review_rows_are_measured_on_the_model_once_per_weights(tmp_path):
    ckpt = tiny_gem_checkpoint(str(tmp_path / "run"), steps=2)
    texts = film_review_texts()
    assert len(texts) == 200 and all(isinstance(t, str) and t for t in texts)
    calls = []

    def row(model, texts, lengths, per_length):
        calls.append(model)
        return model_row(model, texts, lengths, per_length, examples=2)

    out = tmp_path / "film"
    result = measure({"tiny": ckpt}, out, lengths=(4, 8), per_length=3, row=row)
    rec = result["rows"]["tiny"]["reconstruction"]
    assert calls == [ckpt] and rec["count"] == {"4": 3, "8": 3}
    assert all(0 <= rec[k][n] <= 1 for k in ("exact", "exact_with_stop", "token_accuracy", "stopped") for n in ("4", "8"))
    assert all(rec["exact_with_stop"][n] <= rec["exact"][n] for n in ("4", "8")), "a stop is an exact copy that ends"
    examples = result["rows"]["tiny"]["examples"]
    assert len(examples) == 2 and all(isinstance(e["reconstruct"], str) for e in examples)
    table = out.with_suffix(".md").read_text()
    assert "| model | 4 tok | 8 tok | stops at 4 / 8 |" in table and "| tiny | " in table
    assert f"| {examples[0]['text'].strip()} |" in table

    calls.clear()
    measure({"tiny": ckpt}, out, lengths=(4, 8), per_length=3, row=row)
    assert calls == [], "unchanged weights: the row is reused"
    saved = json.loads(out.with_suffix(".json").read_text())
    saved["rows"]["tiny"]["fingerprint"] = "older weights"
    out.with_suffix(".json").write_text(json.dumps(saved))
    measure({"tiny": ckpt}, out, lengths=(4, 8), per_length=3, row=row)
    assert calls == [ckpt], "changed weights: measured again"
