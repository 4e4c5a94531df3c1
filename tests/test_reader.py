"""The reconstruction reader (lab.gem.reader, lab.training.reader): inert unless decoding from S,
batched S caches equal the one-text ones, only the reader trains, it learns to read texts back,
and it survives saving, loading, adding to a checkpoint and resuming."""

import contextlib
import json

import pytest
import torch

from lab.gem.forward import unwrap
from lab.gem.reader import Reader, ReaderConfig, has_reader
from lab.models.checkpoints import load_checkpoint, save_checkpoint
from lab.models.export import add_reader
from lab.storage import folder_problem
from lab.training.reader import ReaderTrainConfig, reader_loss, special_caches, train_reader

from .conftest import tiny_gem

WORDS = ["tiger", "apple", "stone", "river"]
TEXTS = ["a", "the cat", "a longer text here", "mid size one"]


def _random_reader(gem, seed=0) -> Reader:
    reader = Reader(unwrap(gem.model), ReaderConfig(r=4, alpha=8))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for b in reader.B:
            b.normal_(0, 0.5)
    return reader


def test_reader_changes_nothing_unless_enabled(arch):
    gem = tiny_gem(arch)
    ids = torch.tensor([gem.text_ids("hello there")])
    before = gem.model(input_ids=ids).logits
    reader = _random_reader(gem)
    assert torch.equal(gem.model(input_ids=ids).logits, before), "a disabled reader must be inert"
    emb_before = gem.encode(["hello there"])
    gem.reader = reader
    assert torch.equal(torch.tensor(gem.encode(["hello there"])), torch.tensor(emb_before)), \
        "embedding never runs the reader"
    with reader.enabled():
        assert not torch.allclose(gem.model(input_ids=ids).logits, before)
    assert torch.equal(gem.model(input_ids=ids).logits, before), "leaving the block switches it off"


def test_a_fresh_reader_is_the_identity(arch):
    gem = tiny_gem(arch)
    reader = Reader(unwrap(gem.model), ReaderConfig(r=4))
    ids = torch.tensor([gem.text_ids("hello there")])
    before = gem.model(input_ids=ids).logits
    with reader.enabled():
        assert torch.equal(gem.model(input_ids=ids).logits, before), "B = 0 at start: no change"


def test_batched_s_caches_equal_one_text_at_a_time(arch):
    """Rows of different lengths, right-padded in one prefill: each row's kept entries (sink/BOS +
    k S entries, every layer) and next position equal `GemModel.special_cache` on that text alone."""
    gem = tiny_gem(arch, k=2)
    seqs = [gem.text_ids(t) for t in TEXTS]
    cache, next_pos = special_caches(gem, seqs)
    for b, text in enumerate(TEXTS):
        alone, pos, _ = gem.special_cache(text)
        assert int(next_pos[b]) == pos
        for layer, ref in zip(cache.layers, alone.layers):
            torch.testing.assert_close(layer.keys[b:b + 1], ref.keys, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(layer.values[b:b + 1], ref.values, rtol=1e-5, atol=1e-5)


def test_reader_loss_reaches_only_the_reader():
    gem = tiny_gem("llama")
    gem.model.requires_grad_(False)
    reader = Reader(unwrap(gem.model), ReaderConfig(r=4), dtype=torch.float32)
    loss, n = reader_loss(gem, reader, [gem.text_ids(t) for t in WORDS])
    loss.backward()
    assert n == sum(len(gem.text_ids(w)) for w in WORDS), "t_2..t_n and the closing eos are scored"
    assert all(p.grad is None for p in gem.model.parameters())
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in reader.B)


def _read_back(gem, text: str, use_reader: bool = True) -> list[int]:
    """The reader's part of reconstruction: greedy decoding from the S cache once the first token
    is right (the first token is the last S's prediction, made without the reader; a random tiny
    model gets it wrong, a trained GEM model mostly right)."""
    ids = gem.text_ids(text)
    cache, pos, _ = gem.special_cache(text)
    on = gem.reader.enabled() if use_reader and gem.reader is not None else contextlib.nullcontext()
    with on:
        logits = gem.continue_from_cache(cache, ids[:1], pos)[-1]
        return ids[:1] + gem.greedy_from_cache(cache, pos + 1, logits, len(ids) - 1)


def _corpus(tmp_path, words=WORDS):
    path = tmp_path / f"words-{len(words)}-{len(words[0])}.jsonl"
    path.write_text("".join(json.dumps({"text": w}) + "\n" for w in words))
    return str(path)


def _cfg(tmp_path, **kw):
    base = dict(corpus=_corpus(tmp_path), r=8, alpha=16, lr=3e-2, batch_size=8, steps=120, min_tokens=5,
                max_tokens=5, warmup_steps=5, save_every=40)
    return ReaderTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A reader trained on a frozen random tiny gemma3 (3 layers: its S entries above layer 0 carry
    the text; in the 2-layer llama too little of it) to read WORDS back from S. The tied head is
    scaled up 10x first: a random tiny model's logits are too flat to put most mass on one token."""
    tmp = tmp_path_factory.mktemp("reader")
    torch.manual_seed(0)
    gem = tiny_gem("gemma3", k=2)
    with torch.no_grad():
        unwrap(gem.model).get_output_embeddings().weight.mul_(10)
    before = {w: (gem.reconstruct_ids(w, max_new_tokens=5), _read_back(gem, w)) for w in WORDS}
    weights = {k: v.clone() for k, v in gem.model.state_dict().items()}
    reader = train_reader(gem, _cfg(tmp, lr=1e-2, r=16, alpha=32, steps=300, save_every=100), tmp / "run")
    gem.reader = reader
    return gem, before, weights, tmp


def test_a_trained_reader_reads_texts_back_from_s(trained):
    gem, before, weights, _ = trained
    for w in WORDS:
        assert _read_back(gem, w) == gem.text_ids(w), w
        assert _read_back(gem, w, use_reader=False) == before[w][1], "off, it decodes as before"
        assert gem.reconstruct_ids(w, max_new_tokens=5, use_reader=False) == before[w][0]
        assert gem.reconstruct_ids(w, max_new_tokens=5)[0] == before[w][0][0], "the first token is the model's"
    assert any(before[w][1] != gem.text_ids(w) for w in WORDS), "the random model alone could not read them"
    assert all(torch.equal(v, weights[k]) for k, v in gem.model.state_dict().items()), "the GEM model is frozen"


def test_checkpoint_and_add_reader_keep_the_reader(trained, tmp_path):
    gem, _, _, tmp = trained
    weights = gem.model.state_dict()  # the scaled head is not the registry's tiny model: save it all
    ckpt = save_checkpoint(gem, tmp_path / "ckpt", full_weights=weights)
    assert has_reader(ckpt) and folder_problem(ckpt) is None
    loaded = load_checkpoint(ckpt)
    assert loaded.reader is not None
    for w in WORDS:
        assert _read_back(loaded, w) == gem.text_ids(w), "fp16 storage reads back alike"

    reader = gem.reader
    gem.reader = None
    plain = save_checkpoint(gem, tmp_path / "plain", full_weights=weights)
    gem.reader = reader
    assert load_checkpoint(plain).reader is None
    with pytest.raises(FileNotFoundError, match="train-reader"):
        add_reader(plain, tmp_path / "nothing-here")
    combined = add_reader(plain, tmp / "run", tmp_path / "combined")
    assert folder_problem(combined) is None and (combined / "reader_training.json").is_file()
    assert _read_back(load_checkpoint(combined), WORDS[0]) == gem.text_ids(WORDS[0])


def test_reader_training_resumes_exactly(tmp_path):
    """4 steps straight == 2 steps, stop, a fresh process (model) resuming to 4: the same weights."""
    cfg = _cfg(tmp_path, steps=4, save_every=2, lr=1e-2)

    def fresh():
        torch.manual_seed(0)
        return tiny_gem("llama")

    straight = train_reader(fresh(), cfg, tmp_path / "straight").state_dict()
    train_reader(fresh(), cfg, tmp_path / "resumed", stop_after=2)
    assert json.loads((tmp_path / "resumed" / "reader_state.json").read_text())["step"] == 2
    resumed = train_reader(fresh(), cfg, tmp_path / "resumed").state_dict()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0)


def test_curve_table_and_report_rows(tmp_path):
    from lab.evaluation.report import reconstruction_table
    from lab.experiments.reader import curve_table

    point = {"exact": {"8": 0.5, "16": 0.0}, "token_accuracy": {"8": 0.75, "16": 0.25}}
    (tmp_path / "curve.jsonl").write_text(json.dumps({**point, "step": 50}) + "\n"
                                          + json.dumps({**point, "step": 25}) + "\n")
    table = curve_table(tmp_path).splitlines()
    assert table[2].startswith("| 25 |") and table[3] == "| 50 | 50 | 75.0 | 0 | 25.0 |"
    none = {"exact": {"8": 0.25}, "token_accuracy": {"8": 0.5}}
    rows = reconstruction_table([{"label": "GEM", "reconstruction": point, "reconstruction_no_reader": none}])
    assert "| GEM (with its reader) | 50 / 75.0 | 0 / 25.0 |" in rows
    assert "| GEM (GEM weights alone, no reader) | 25 / 50.0 | – / – |" in rows


def test_reader_run_writes_a_curve_from_step_0(tmp_path):
    """`lab train-reader` on a checkpoint: step 0 (the model alone) and every save are on the curve;
    the table file is written; a rerun resumes without training or evaluating again."""
    from lab.cli import main

    gem = tiny_gem("gemma3", k=2)
    ckpt = save_checkpoint(gem, tmp_path / "ckpt", full_weights=gem.model.state_dict())
    heldout = _corpus(tmp_path, ["held-out sentence number one", "and a second held-out sentence"])
    args = ["train-reader", "--model", str(ckpt), "--out", str(tmp_path / "run"), "--steps", "4", "--r", "2",
            "--batch-size", "4", "--max-tokens", "5", "--corpus", _corpus(tmp_path), "--heldout", heldout,
            "--eval-texts", "2", "--table", str(tmp_path / "curve.md")]
    assert main(args) == 0
    curve = [json.loads(line) for line in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [0, 4], "step 0, then the last step (save_every 25 > 4 steps)"
    assert all(p["count"] == {"8": 2, "16": 2} for p in curve)
    assert "| 4 |" in (tmp_path / "curve.md").read_text()
    mtime = (tmp_path / "run" / "curve.jsonl").stat().st_mtime_ns
    assert main(args) == 0
    assert (tmp_path / "run" / "curve.jsonl").stat().st_mtime_ns == mtime, "finished: nothing redone"


def test_the_reader_is_on_only_in_the_thread_that_enabled_it():
    import threading

    gem = tiny_gem("llama")
    ids = torch.tensor([gem.text_ids("hello there")])
    before = gem.model(input_ids=ids).logits
    reader = _random_reader(gem)
    seen = {}
    with reader.enabled():
        other = threading.Thread(target=lambda: seen.update(logits=gem.model(input_ids=ids).logits))
        other.start()
        other.join()
    assert torch.equal(seen["logits"], before), "another thread's forward does not run the reader"


def test_an_interrupted_save_resumes_from_the_last_complete_one(tmp_path):
    """The resume point is one atomic file (weights, moments, step): a state file left behind by a
    crash between writes cannot pair one step's weights with another's step."""
    cfg = _cfg(tmp_path, steps=4, save_every=2, lr=1e-2)
    torch.manual_seed(0)
    train_reader(tiny_gem("llama"), cfg, tmp_path / "run", stop_after=2)
    state = tmp_path / "run" / "reader_state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "step": 0}))  # stale, as after a crash
    torch.manual_seed(0)
    resumed = train_reader(tiny_gem("llama"), cfg, tmp_path / "run").state_dict()
    torch.manual_seed(0)
    straight = train_reader(tiny_gem("llama"), cfg, tmp_path / "straight").state_dict()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0)
    assert json.loads(state.read_text())["step"] == 4
