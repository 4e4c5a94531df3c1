"""Corpus embedding: equals encode(), resumes after an interrupt, two processes == one."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lab.corpora.embed import embed_corpus
from lab.gem import GemModel
from lab.weights import load_causal_lm

TEXTS = [f"text number {i} about {'cats' if i % 2 else 'stocks'} and more" for i in range(23)]


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(TEXTS) + "\n")
    return p


def _base():
    return GemModel(*load_causal_lm("tiny-llama"), None, name="tiny-llama")


def test_output_equals_encode(corpus, tmp_path):
    out = embed_corpus("tiny-llama", corpus, tmp_path / "E.npy", chunk_size=5, batch_size=4, dtype="float32")
    E = np.load(out)
    np.testing.assert_allclose(E, _base().encode(TEXTS), atol=1e-5)
    assert not (tmp_path / "E.npy.parts").exists()


def test_jsonl_input_and_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"body": t}) for t in TEXTS[:4]))
    E = np.load(embed_corpus("tiny-llama", p, tmp_path / "E.npy", field="body", dtype="float32"))
    assert E.shape == (4, 64)
    with pytest.raises(ValueError, match="no string field 'text'"):
        embed_corpus("tiny-llama", p, tmp_path / "F.npy", dtype="float32")
    bad = tmp_path / "c.csv"
    bad.write_text("a\n")
    with pytest.raises(ValueError, match="unsupported input type"):
        embed_corpus("tiny-llama", bad, tmp_path / "G.npy")
    gap = tmp_path / "gap.txt"
    gap.write_text("one\n\nthree\n")
    with pytest.raises(ValueError, match="gap.txt:2 is empty"):
        embed_corpus("tiny-llama", gap, tmp_path / "H.npy", dtype="float32")


class Boom(KeyboardInterrupt):
    pass


def test_resume_after_interrupt_skips_done_chunks(corpus, tmp_path):
    gem = _base()
    calls = []
    real = gem.encode

    def flaky(texts, **kw):
        calls.append(len(texts))
        if len(calls) == 3:
            raise Boom()
        return real(texts, **kw)

    gem.encode = flaky
    with pytest.raises(Boom):
        embed_corpus("tiny-llama", corpus, tmp_path / "E.npy", chunk_size=5, gem=gem)
    assert not (tmp_path / "E.npy").exists()
    assert len(list((tmp_path / "E.npy.parts").glob("chunk-*.npy"))) == 2
    calls.clear()
    gem.encode = real
    gem.encode = lambda texts, **kw: (calls.append(len(texts)), real(texts, **kw))[1]
    out = embed_corpus("tiny-llama", corpus, tmp_path / "E.npy", chunk_size=5, gem=gem)
    assert calls == [5, 5, 3], "only the 3 missing chunks are embedded again"
    np.testing.assert_allclose(np.load(out), real(TEXTS), atol=1e-5)


def test_partial_results_of_another_run_are_not_mixed(corpus, tmp_path):
    parts = tmp_path / "E.npy.parts"
    parts.mkdir()
    (parts / "run.json").write_text(json.dumps({"input": "other"}))
    with pytest.raises(RuntimeError, match="different run"):
        embed_corpus("tiny-llama", corpus, tmp_path / "E.npy", dtype="float32")


def test_two_processes_equal_one(corpus, tmp_path):
    one = np.load(embed_corpus("tiny-llama", corpus, tmp_path / "one.npy", chunk_size=4, dtype="float32"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # torchrun --standalone: a real 2-process gloo group on CPU (accelerate reads its environment)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lab", "embed", "--model", "tiny-llama", "--input", str(corpus),
           "--output", str(tmp_path / "two.npy"), "--chunk-size", "4", "--dtype", "float32"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "process 0 of 2: 3 of 6 chunks" in res.stderr and "process 1 of 2: 3 of 6 chunks" in res.stderr
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), one, atol=1e-5)


def test_writes_never_replace_a_folder_the_lab_did_not_make(tmp_path):
    from lab.storage import atomic_dir
    from lab.weights.export import export_target

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="did not write .*--force"):
        with atomic_dir(notes) as tmp:
            (tmp / "x").write_text("new")
    assert (notes / "todo.txt").read_text() == "keep me" and not list(tmp_path.glob(".notes.*"))
    with atomic_dir(notes, replace_foreign=True) as tmp:  # --force
        (tmp / "x").write_text("new")
    with atomic_dir(notes) as tmp:  # now the lab's own folder: replaced like any output
        (tmp / "y").write_text("newer")
    assert sorted(p.name for p in notes.iterdir()) == ["MANIFEST.json", "y"]
    run = tmp_path / "run"
    (run / "checkpoint-40").mkdir(parents=True)
    for out in (run, run / "checkpoint-40", run / "checkpoint-40" / "inside"):
        with pytest.raises(ValueError, match="holds or is inside the checkpoint"):
            export_target(run / "checkpoint-40", out)
    assert export_target(run / "checkpoint-40", tmp_path / "release") == tmp_path / "release"


def test_line_endings_never_shift_rows(tmp_path):
    from lab.corpora.embed import count_texts, iter_texts

    path = tmp_path / "texts.txt"
    path.write_bytes(b"first text\r\nsecond\rstill the second\nthird\n")
    texts = list(iter_texts(path))
    assert texts == ["first text", "second\rstill the second", "third"] and count_texts(path) == 3


def test_cli_embeds_with_a_shipped_like_checkpoint_and_never_resumes_other_weights(corpus, tmp_path):
    """`lab embed` on a checkpoint configured like the shipped one equals encode(); after the
    weights behind the same path change, the old partial results are refused, not mixed in."""
    from lab.weights.checkpoints import save_checkpoint

    from .conftest import shipped_like_gem

    gem = shipped_like_gem(max_length=64)
    ckpt = save_checkpoint(gem, tmp_path / "gem")
    out = tmp_path / "E.npy"
    cmd = [sys.executable, "-m", "lab", "embed", "--model", str(ckpt), "--input", str(corpus),
           "--output", str(out), "--chunk-size", "8", "--dtype", "float32"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), gem.encode(TEXTS), atol=1e-5)
    assert np.load(out).shape == (len(TEXTS), gem.readout_head.out_dim)

    calls = []

    def interrupted(*args, **kwargs):  # the run is killed after its first chunk
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return type(gem).encode(gem, *args, **kwargs)

    gem.encode = interrupted
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(str(ckpt), corpus, tmp_path / "F.npy", chunk_size=8, dtype="float32", gem=gem)
    assert (tmp_path / "F.npy.parts" / "chunk-000000.npy").exists()
    del gem.encode
    with torch.no_grad():
        gem.readout_head.linear.weight.mul_(2.0)  # re-trained weights behind the same path
    save_checkpoint(gem, ckpt)
    with pytest.raises(RuntimeError, match="different run .*weights"):
        embed_corpus(str(ckpt), corpus, tmp_path / "F.npy", chunk_size=8, dtype="float32")
