"""Equivalence tests of the masked forward and the GemModel API, on tiny llama / qwen2 / gemma3."""

import numpy as np
import pytest
import torch

from lab.gem import GemModel, forward
from lab.gem.masks import Role
from lab.gem.tokens import Row, pad_rows
from lab.weights import load_causal_lm
from lab.weights.checkpoints import load_checkpoint, save_checkpoint

from .conftest import tiny_gem

TEXTS = ["the cat sat on the mat", "a", "GEM tokens carry the whole prefix, right?", "héllo wörld ✓"]
LONG = "A document long enough to cross the sliding window of the tiny gemma model, twice over."


def _row(gem, prefix: str, suffix: str, k=None):
    pre = gem.bos + gem.tokenizer(prefix, add_special_tokens=False)["input_ids"]
    suf = gem.tokenizer(suffix, add_special_tokens=False)["input_ids"]
    return Row.build(pre, gem.special_ids[:k], suf, bos_token_id=gem.bos[0] if gem.bos else None)


def _logits(gem, rows, padding_side="right", segment_ids=None):
    batch = pad_rows(rows, gem.tokenizer.pad_token_id, padding_side)
    with torch.no_grad():
        return forward.logits(gem.model, batch["input_ids"], batch["roles"], segment_ids), batch


def test_leak_suffix_depends_on_prefix_only_through_special_tokens(arch):
    """Suffix logits from the full masked forward == suffix logits computed from the S tokens'
    KV cache alone, with the prefix removed."""
    gem = tiny_gem(arch, k=2)
    prefix, suffix = "the prefix text that must stay hidden", " and then the suffix"
    row = _row(gem, prefix, suffix)
    full, batch = _logits(gem, [row])
    suffix_pos = (batch["roles"][0] == Role.SUFFIX).nonzero().squeeze(-1)
    cache, next_pos, _ = gem.special_cache(prefix)
    assert cache.get_seq_length() == 2
    from_cache = gem.continue_from_cache(cache, [row.input_ids[i] for i in suffix_pos.tolist()], next_pos)
    torch.testing.assert_close(from_cache, full[0, suffix_pos], rtol=1e-4, atol=1e-4)
    # a different prefix still moves the suffix: S carries it (the cache check above shows S is
    # the only route)
    other, _ = _logits(gem, [_row(gem, "a different prefix text entirely!!!", suffix)])
    assert not torch.allclose(other[0, -1], full[0, -1]), "the suffix must still depend on S"


def test_leak_check_report(arch):
    """lab.gem.leak.leak_check (what notebook 1 shows) agrees: no leak, but a dependence through S."""
    from lab.gem.leak import leak_check

    r = leak_check(tiny_gem(arch, k=2), "the prefix text that must stay hidden", " and then the suffix",
                   other_prefix="a different prefix text entirely!!!")
    assert r["max_diff_from_s_cache"] < 1e-4 and r["cached_entries"] == 2
    assert r["max_change_other_prefix"] > 1e-3


def test_packed_rows_equal_separate_rows(arch):
    gem = tiny_gem(arch, k=1)
    r1, r2 = _row(gem, "first row prefix", " its suffix"), _row(gem, "second, longer row prefix", " suffix two")
    packed = Row(r1.input_ids + r2.input_ids, r1.roles + r2.roles)
    seg = torch.tensor([[0] * len(r1.input_ids) + [1] * len(r2.input_ids)])
    lp, _ = _logits(gem, [packed], segment_ids=seg)
    l1, _ = _logits(gem, [r1])
    l2, _ = _logits(gem, [r2])
    torch.testing.assert_close(lp[0, :len(r1.input_ids)], l1[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lp[0, len(r1.input_ids):], l2[0], rtol=1e-4, atol=1e-4)


def test_eager_equals_sdpa(arch):
    sdpa, eager = tiny_gem(arch, k=2), tiny_gem(arch, k=2, attn_implementation="eager")
    rows = [_row(sdpa, "an eager prefix", " and suffix"), _row(sdpa, "short", "")]
    a, _ = _logits(sdpa, rows)
    b, _ = _logits(eager, rows)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sdpa.encode(TEXTS), eager.encode(TEXTS), atol=1e-5)


def test_left_and_right_padding_give_the_same_logits(arch):
    gem = tiny_gem(arch, k=1)
    rows = [_row(gem, "pad me", " please"), _row(gem, "a longer prefix for padding tests", " ok")]
    right, rb = _logits(gem, rows, "right")
    left, lb = _logits(gem, rows, "left")
    for b in range(2):
        r, l = rb["roles"][b] != Role.PAD, lb["roles"][b] != Role.PAD
        torch.testing.assert_close(right[b, r], left[b, l], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pooling", ["gem", "mean", "last", "prompteol", "echo"])
def test_encode_is_batch_invariant_and_in_input_order(pooling):
    gem = tiny_gem("llama", k=2)
    together = gem.encode(TEXTS, pooling=pooling, batch_size=3)
    alone = np.stack([gem.encode(t, pooling=pooling) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(together[0], together[2])


def test_gem_readouts():
    gem = tiny_gem("qwen2", k=3)
    mean = gem.encode(TEXTS[:2], normalize=False)
    gem.gem_config.readout = "concat"
    cat = gem.encode(TEXTS[:2], normalize=False)
    assert cat.shape == (2, 3 * gem.hidden_size)
    np.testing.assert_allclose(cat.reshape(2, 3, -1).mean(1), mean, atol=1e-5)


def test_special_token_strings_in_text_stay_plain_text():
    gem = tiny_gem("llama", k=1)
    text = "inject <|gem_0|> here"
    ids = gem.tokenizer(text, split_special_tokens=True)["input_ids"]
    assert gem.special_ids[0] not in ids
    plan = gem.plan_rows([text], "gem")[0]
    assert plan.row.input_ids.count(gem.special_ids[0]) == 1 and plan.row.input_ids[-1] == gem.special_ids[0]
    view = gem.attention(text)
    assert view.roles.count("special") == 1


def test_truncation_warns_once_and_bad_input_raises(caplog):
    gem = tiny_gem("llama", k=1, max_length=16)
    with caplog.at_level("WARNING"):
        e = gem.encode(["x" * 100, "y" * 200, "short"])
    assert e.shape == (3, gem.hidden_size)
    assert sum("2 of 3 texts" in r.message for r in caplog.records) == 1
    with pytest.raises(ValueError, match="empty"):
        gem.encode(["ok", "  "])
    with pytest.raises(TypeError, match="not str"):
        gem.encode(["ok", 3])
    with pytest.raises(ValueError, match="unknown pooling"):
        gem.encode("ok", pooling="cls")
    assert gem.encode([]).shape == (0, gem.hidden_size)


def test_base_model_refuses_gem_pooling_but_does_the_rest():
    model, tok = load_causal_lm("tiny-llama")
    base = GemModel(model, tok, None, name="tiny-llama")
    with pytest.raises(ValueError, match="pooling='mean'"):
        base.encode("hello", pooling="gem")
    assert base.encode("hello").shape == (64,)  # default: mean pooling
    for p in ("last", "prompteol", "echo"):
        assert base.encode("hello", pooling=p).shape == (64,)
    with pytest.raises(ValueError, match="GEM checkpoint"):
        base.reconstruct("hello")
    assert base.attention("hello").roles.count("special") == 0


def test_generation_never_emits_special_tokens():
    gem = tiny_gem("llama", k=1)  # tiny-llama ties its LM head to the input embedding
    S = gem.special_ids[0]
    assert gem.model.get_output_embeddings().weight is gem.model.get_input_embeddings().weight
    ids = torch.tensor([gem.prompt_ids("hello")])
    with torch.no_grad():  # point S's (tied) output row along the last state: S becomes the argmax there
        h = gem.model.model(input_ids=ids).last_hidden_state[0, -1]
        gem.model.get_input_embeddings().weight[S] = 1000 * h / h.norm() ** 2
    with torch.no_grad():
        assert int(gem.model(input_ids=ids).logits[0, -1].argmax()) == S, "positive control: greedy would pick S"
    out = gem.generate_ids(ids, max_new_tokens=10)
    assert S not in out[0].tolist() and len(out[0]) > 0


def test_cached_generation_equals_uncached(arch):
    gem = tiny_gem(arch, k=1)
    ids = torch.tensor([gem.prompt_ids(LONG)])
    cached = gem.generate_ids(ids, max_new_tokens=12, use_cache=True)
    seq = ids
    for _ in range(12):  # uncached greedy: full forward every step
        with torch.no_grad():
            logits = gem.model(input_ids=seq).logits[0, -1]
        logits[gem.special_ids] = float("-inf")
        seq = torch.cat([seq, logits.argmax().view(1, 1)], 1)
    assert cached[0].tolist() == seq[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("pooling", ["gem", "mean"])
def test_embed_and_generate_equals_encode_plus_generate(arch, pooling):
    gem = tiny_gem(arch, k=2)
    prompt = "\nQuestion: what is it?\nAnswer:"
    emb, text = gem.embed_and_generate(LONG, prompt, max_new_tokens=10, pooling=pooling)
    np.testing.assert_allclose(emb, gem.encode(LONG, pooling=pooling), atol=1e-5)
    doc_ids = gem.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    prompt_ids = gem.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    plain = gem.generate_ids(torch.tensor([gem.bos + doc_ids + prompt_ids]), max_new_tokens=10)
    assert text == gem.tokenizer.decode(plain[0], skip_special_tokens=True)
    with pytest.raises(ValueError, match="cannot be shared"):
        gem.embed_and_generate(LONG, prompt, pooling="echo")


def test_reconstruct_decodes_from_a_cache_that_holds_s_alone(arch):
    """`reconstruct` = greedy decoding from a KV cache holding only the k S entries (and a sink's,
    when the model has one): the text's own tokens are not in it, so what comes back passed
    through S. (That the suffix sees the prefix only through S is the leak test above.)"""
    gem = tiny_gem(arch, k=2)
    text = "abc"
    n_text, k = len(gem.text_ids(text)), len(gem.special_ids)
    cache, pos, logits = gem.special_cache(text)
    assert cache.get_seq_length() == len(gem.sink_ids) + k, "the cache holds the sink and S, not the text"
    assert pos == len(gem.bos) + n_text + k, "the next token's position follows BOS, the text and S"
    assert logits.shape == (1, gem.model.config.vocab_size)
    ids = gem.reconstruct_ids(text, max_new_tokens=5)
    assert ids == gem.greedy_from_cache(cache, pos, logits[0], 5)
    assert gem.reconstruct(text, max_new_tokens=5) == gem.tokenizer.decode(ids, skip_special_tokens=True)


def test_attention_view(arch):
    gem = tiny_gem(arch, k=2)
    v = gem.attention("hello world", split=3)
    T = len(v.tokens)
    assert v.roles.count("special") == 2 and v.roles.count("suffix") == len("hello world") - 3
    assert v.attentions.shape[1:] == (gem.model.config.num_attention_heads, T, T)
    assert np.allclose(v.attentions.sum(-1), 1.0, atol=1e-4)
    assert (v.attentions[:, :, ~v.mask] == 0).all(), "no attention where the mask forbids it"
    assert gem.model.config._attn_implementation == "sdpa", "backend restored after the eager view"
    with pytest.raises(ValueError, match="outside"):
        gem.attention("hi", split=10)


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path, arch):
    gem = tiny_gem(arch, k=2)
    save_checkpoint(gem, tmp_path / "ckpt")
    again = load_checkpoint(tmp_path / "ckpt")
    np.testing.assert_array_equal(gem.encode(TEXTS), again.encode(TEXTS))
    from lab import load

    np.testing.assert_array_equal(load(str(tmp_path / "ckpt"), dtype="float32").encode(TEXTS), again.encode(TEXTS))


def test_unfinished_checkpoint_is_refused(tmp_path):
    gem = tiny_gem("llama", k=1)
    save_checkpoint(gem, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "MANIFEST.json").unlink()
    with pytest.raises(RuntimeError, match="interrupted"):
        load_checkpoint(tmp_path / "ckpt")


def test_a_file_damaged_at_the_same_size_is_refused_and_named(tmp_path):
    """Sizes alone miss a file zeroed in place: the manifest's SHA-256 catches it, on load and export."""
    from lab.weights.export import export_release

    from .conftest import shipped_like_gem

    save_checkpoint(shipped_like_gem(max_length=64), tmp_path / "ckpt")
    head = tmp_path / "ckpt" / "readout_head.safetensors"
    data = bytearray(head.read_bytes())
    data[-64:] = bytes(64)  # the last weights zeroed, the size unchanged
    head.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="readout_head.safetensors is damaged"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match="readout_head.safetensors is damaged"):
        export_release(tmp_path / "ckpt", tmp_path / "release")


def test_causal_fast_path_gives_the_same_numbers(arch):
    """When the GEM mask is plain causal (k=1 at the end, no padding) no mask is passed, so SDPA
    can use its fused causal kernel; the result must equal the explicit-mask forward."""
    gem = tiny_gem(arch, k=1)
    row = _row(gem, LONG, "")
    batch = pad_rows([row], gem.tokenizer.pad_token_id)
    fast = forward.gem_inputs(gem.model, batch["input_ids"], batch["roles"])
    assert fast["attention_mask"] is None
    from lab.gem.masks import gem_mask, model_attention_mask

    explicit = dict(fast, attention_mask=model_attention_mask(gem_mask(batch["roles"]), gem.model.config, torch.float32))
    with torch.no_grad():
        torch.testing.assert_close(gem.model(**fast).logits, gem.model(**explicit).logits, rtol=1e-4, atol=1e-4)
    two = forward.gem_inputs(gem.model, *pad_rows([row, _row(gem, "short", "")], 0).values())
    assert two["attention_mask"] is not None, "padding needs the explicit mask"


def test_bad_sizes_and_saved_settings_are_named_not_used():
    from lab.gem.config import GemConfig

    gem = tiny_gem("llama", k=1)
    for kw, name in [({"batch_size": -1}, "batch_size"), ({"batch_size": 0}, "batch_size"),
                     ({"max_length": 0}, "max_length"), ({"batch_size": True}, "batch_size")]:
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            gem.encode(["a text"], **kw)
    for bad, message in [({"trained": "false"}, "trained must be true or false"), ({"k": "5"}, "k must be an integer"),
                         ({"readout_head": 0}, "readout_head must be true or false")]:
        with pytest.raises(ValueError, match=message):
            GemConfig(**bad)


def test_missing_or_malformed_inputs_are_named():
    gem = tiny_gem("llama", k=2)
    for call, err, message in [(lambda: gem.encode(None), TypeError, "texts must be a string or a list"),
                               (lambda: gem.generate(None), TypeError, "prompt must be a string or a list"),
                               (lambda: gem.generate([]), ValueError, "prompt is an empty list"),
                               (lambda: gem.generate(["ok", None]), TypeError, "prompt must hold strings only"),
                               (lambda: gem.attention("a text", k=-1), ValueError, "k must be 0"),
                               (lambda: gem.attention("a text", k=3), ValueError, "k=3 but this model has 2")]:
        with pytest.raises(err, match=message):
            call()


def test_damaged_files_are_named_even_without_content_hashes(tmp_path):
    """A manifest from before content hashes (sizes only): a damaged head or config still gives an
    error naming the file, not a bare parser traceback; so does a damaged corpus line."""
    import json

    from lab.storage import read_jsonl
    from lab.storage.atomic import MANIFEST

    from .conftest import shipped_like_gem

    ckpt = save_checkpoint(shipped_like_gem(max_length=64), tmp_path / "ckpt")
    manifest = json.loads((ckpt / MANIFEST).read_text())
    del manifest["sha256"]
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    head = ckpt / "readout_head.safetensors"
    head.write_bytes(b"\xff" * 16 + head.read_bytes()[16:])  # the header destroyed, the size kept
    with pytest.raises(ValueError, match="readout_head.safetensors is damaged"):
        load_checkpoint(ckpt)
    config = ckpt / "gem_config.json"
    config.write_text("{" + " " * (config.stat().st_size - 1))
    with pytest.raises(ValueError, match="gem_config.json is damaged"):
        load_checkpoint(ckpt)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "cut off\n')
    with pytest.raises(ValueError, match="c.jsonl is damaged at line 2"):
        read_jsonl(corpus)


def test_small_api_surprises_are_named(tmp_path, monkeypatch, capsys):
    """An integer dtype, a string max_new_tokens, a gem_config.json whose k does not match the
    saved rows, a `last` file naming a path outside its run, a full disk in the CLI: each is a
    one-line error naming the problem, not a torch traceback."""
    import errno
    import json

    import lab
    from lab import cli
    from lab.storage import reseal
    from lab.weights.checkpoints import resolve_run

    with pytest.raises(ValueError, match="not a floating-point type"):
        lab.load("tiny-llama", dtype=torch.int8)
    with pytest.raises(ValueError, match="max_new_tokens"):
        lab.load("tiny-llama").generate("hi", max_new_tokens="5")
    ckpt = save_checkpoint(tiny_gem("llama", k=2), tmp_path / "ckpt")
    config = json.loads((ckpt / "gem_config.json").read_text())
    (ckpt / "gem_config.json").write_text(json.dumps({**config, "k": 1}))
    reseal(ckpt)
    with pytest.raises(ValueError, match="gem_tokens.safetensors holds 2 GEM rows .* asks for k = 1"):
        load_checkpoint(ckpt)
    (tmp_path / "last").write_text("../../etc\n")
    with pytest.raises(ValueError, match="not a checkpoint folder of this run"):
        resolve_run(tmp_path)

    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "_cmd_models", disk_full)
    assert cli.main(["models"]) == 2
    assert "No space left on device. Nothing half-written was kept; free some space" in capsys.readouterr().err
