"""The mixed training corpus (lab/corpora/mixed.py): Brown's tagged text read back as plain prose, no row
that shares 8 words with a held-out text, the asked share, and a clear error without npm."""

import pytest

from lab.corpora import mixed as mixed_corpus
from lab.corpora.mixed import brown_paragraphs, detokenise, mixed_rows, other_rows
from lab.corpora.wiki import shingles

BROWN_DOC = """

\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' was/bedz found/vbn ./.
\tIt/pps didn't/do* matter/vb ,/, he/pps said/vbd (/( quietly/rb )/) ./.


\tA/at second/od paragraph/nn ,/, with/in Atlanta's/np$ mayor/nn-tl ,/, who/wps spoke/vbd at/in length/nn today/nr ./.
"""


def test_brown_tokens_read_as_plain_text(tmp_path):
    assert detokenise(["He", "said", "``", "no", "''", ",", "then", "(", "twice", ")", "."]) == 'He said "no", then (twice).'
    doc = tmp_path / "ca01"
    doc.write_text(BROWN_DOC)
    assert brown_paragraphs(doc) == [
        'The jury said "no evidence" was found. It didn\'t matter, he said (quietly).',
        "A second paragraph, with Atlanta's mayor, who spoke at length today."]


def test_rows_sharing_eight_words_with_a_held_out_text_are_dropped(monkeypatch):
    kept = "The committee met on Tuesday and voted to build a new bridge over the river near the town."
    leaked = "She said the film was a quiet and moving portrait of a family in grief, and then left the room."
    monkeypatch.setattr(mixed_corpus, "brown_documents", lambda: [("brown/ca01", kept + " " + leaked)])
    monkeypatch.setattr(mixed_corpus, "lee_background_documents", lambda: [("lee-background/0", kept)])
    avoid = shingles("a quiet and moving portrait of a family in grief")
    rows, dropped = other_rows(avoid)
    assert dropped > 0 and rows and all(not (shingles(r["text"]) & avoid) for r in rows)
    assert [r["text"] for r in rows].count(kept) == 1, "the same sentence from two sources is kept once"
    assert {r["title"] for r in rows} == {"brown/ca01"}


def test_the_others_make_the_asked_share_and_the_wikipedia_rows_are_all_kept():
    wiki = [{"text": f"w{i}", "title": "wiki"} for i in range(30)]
    others = [{"text": f"o{i}", "title": "brown/ca01"} for i in range(100)]
    rows = mixed_rows(wiki, others, 0.25)
    assert len(rows) == 40 and sum(r["title"] == "wiki" for r in rows) == 30
    assert rows == mixed_rows(wiki, others, 0.25), "seeded: the same corpus every build"
    assert len(mixed_rows(wiki, others, 0.9)) == 130, "never more than the others available"
    with pytest.raises(ValueError, match=r"other_share must be in \[0, 1\)"):
        mixed_rows(wiki, others, 1.0)


def test_without_npm_the_error_names_the_missing_tool_and_the_way_round(monkeypatch, tmp_path):
    monkeypatch.setenv("GEM_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(mixed_corpus.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="npm is not installed.*apt install npm"):
        mixed_corpus.brown_dir()
