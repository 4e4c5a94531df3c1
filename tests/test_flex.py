"""FlexAttention carries the same GEM mask as the dense path (lab.gem.flex): the block mask's
entries equal `gem_mask` on hundreds of random role rows, and a FlexAttention model gives the
same logits, embeddings and leak check as SDPA with the dense mask, on every row kind.

Torch runs FlexAttention's backward only on GPUs, so the gradient equivalence is in
tests/test_gpu.py; here the CPU checks the forward (compiled once per shape: ~30 s in all)."""

import random

import numpy as np
import pytest
import torch

from lab.gem import forward
from lab.gem.flex import FLEX, attention_for, flex_attention_mask, gem_block_mask, uses_flex
from lab.gem.leak import leak_check
from lab.gem.masks import Role, gem_mask, model_attention_mask, sliding_window, to_backend

from .conftest import tiny_gem

pytest.importorskip("torch.nn.attention.flex_attention")
T = 48  # one length for every forward here: FlexAttention compiles once per shape


@pytest.fixture(autouse=True)
def _static_shapes():
    """Compile FlexAttention for each shape as it comes (torch 2.13's CPU code generation fails on
    the dynamic-shape recompile that torch.compile otherwise makes on the second shape)."""
    import torch._dynamo

    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        yield


def flex_attention(q, k, v, block_mask):
    from torch.nn.attention.flex_attention import flex_attention as attend

    return attend(q, k, v, block_mask=block_mask)


def _dense_of(block_mask, B: int, T: int) -> torch.Tensor:
    from torch.nn.attention.flex_attention import create_mask

    return create_mask(block_mask.mask_mod, B, None, T, T, device="cpu")


def _random_row(rng: random.Random, T: int, k: int, sink: bool) -> tuple[list[int], list[int]]:
    """(roles, segment ids) of a packed row: 1-3 segments of plain / reconstruction / continuation
    rows with k special tokens, then right padding."""
    roles, segs, seg = [], [], 0
    while len(roles) < T - 4 and seg < 3:
        n = rng.randint(2, 8)
        kind = rng.choice(["plain", "reconstruction", "continuation"])
        row = [Role.BOS] if (sink or rng.random() < 0.5) else []
        row += [Role.PREFIX] * n
        if kind != "plain":
            row += [Role.SPECIAL] * k + [Role.SUFFIX] * (n if kind == "reconstruction" else rng.randint(1, 6))
        row = row[:T - len(roles)]
        roles += row
        segs += [seg] * len(row)
        seg += 1
    return roles + [Role.PAD] * (T - len(roles)), segs + [seg] * (T - len(segs))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_the_block_mask_is_the_dense_gem_mask_on_random_rows(k):
    rng = random.Random(k)
    for sink in (False, True):
        rows = [_random_row(rng, 40, k, sink) for _ in range(40)]
        roles = torch.tensor([r for r, _ in rows])
        segments = torch.tensor([s for _, s in rows])
        for seg in (None, segments):
            dense = gem_mask(roles, seg, suffix_sees_bos=sink)
            block = gem_block_mask(roles, seg, suffix_sees_bos=sink)
            assert torch.equal(_dense_of(block, len(rows), 40), dense), (k, sink, seg is not None)
            # and inside the kernel (where the rule runs traced): attention equals SDPA's with the dense mask
            q, kk, v = (torch.randn(len(rows), 2, 40, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
            out = flex_attention(q, kk, v, block_mask=block)
            ref = torch.nn.functional.scaled_dot_product_attention(q, kk, v, attn_mask=dense)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(_dense_of(gem_block_mask(roles, window=8), len(rows), 40), sliding_window(gem_mask(roles), 8))


def _batch(gem, texts: list[str], kind: str, pack: bool):
    """input_ids, roles, segment_ids (or None) of rows of one kind, padded to T."""
    from lab.gem.tokens import Row

    rows = []
    for i, text in enumerate(texts):
        ids = gem.text_ids(text)[:10]
        if kind == "plain":
            rows.append(Row.build(gem.bos + ids, [], bos_token_id=gem.bos[0] if gem.bos else None))
        else:
            suffix = ids if kind == "reconstruction" else gem.text_ids(texts[(i + 1) % len(texts)])[:6]
            rows.append(Row.build(gem.bos + ids, gem.special_ids, suffix, bos_token_id=gem.bos[0] if gem.bos else None))
    if pack:  # two rows per sequence, one segment each (four sequences: the same shape as unpacked)
        pairs = [(rows[i], rows[(i + 1) % len(rows)]) for i in range(len(rows))]
        rows_ids = [a.input_ids + b.input_ids for a, b in pairs]
        rows_roles = [a.roles + b.roles for a, b in pairs]
        rows_segs = [[0] * len(a.input_ids) + [1] * len(b.input_ids) for a, b in pairs]
    else:
        rows_ids, rows_roles, rows_segs = [r.input_ids for r in rows], [r.roles for r in rows], None
    pad = lambda xs, v: [x + [v] * (T - len(x)) for x in xs]  # noqa: E731
    seg = torch.tensor(pad(rows_segs, 99)) if rows_segs else None
    return torch.tensor(pad(rows_ids, gem.pad_token_id)), torch.tensor(pad(rows_roles, int(Role.PAD))), seg


TEXTS = ["the cat sat on the mat", "stocks fell on monday", "a short one", "rain again in paris today"]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])  # gemma3: sliding-window layers get a BlockMask each
@pytest.mark.parametrize("k, sink", [(1, False), (5, True)])
def test_a_flex_model_gives_the_dense_paths_logits_on_every_row_kind(arch, k, sink):
    gem = tiny_gem(arch, k=k, sink_token="<s>") if sink else tiny_gem(arch, k=k)
    for kind, pack in [("plain", False), ("reconstruction", False), ("continuation", False), ("reconstruction", True)]:
        ids, roles, seg = _batch(gem, TEXTS, kind, pack)
        with torch.no_grad():
            gem.model.set_attn_implementation("sdpa")
            dense = forward.logits(gem.model, ids, roles, seg, gem.suffix_sees_bos)
            gem.model.set_attn_implementation(FLEX)
            assert uses_flex(gem.model)
            flex = forward.logits(gem.model, ids, roles, seg, gem.suffix_sees_bos)
        real = roles != Role.PAD
        torch.testing.assert_close(flex[real], dense[real], atol=2e-5, rtol=1e-4, msg=f"{kind}, packed={pack}")


def test_a_flex_model_embeds_and_passes_the_leak_check():
    gem = tiny_gem("llama", k=5)
    dense = gem.encode(TEXTS, batch_size=4)
    gem.model.set_attn_implementation(FLEX)
    np.testing.assert_allclose(gem.encode(TEXTS, batch_size=4), dense, atol=1e-5)
    report = leak_check(gem, "The Eiffel Tower is in Paris.", " It was built", other_prefix="Bananas are yellow.")
    assert report["relative_diff"] < 1e-4, "nothing leaks past S through the flex path"
    assert report["max_change_other_prefix"] > 1e-3, "the suffix still depends on the prefix, through S"
    broken = leak_check(gem, "The Eiffel Tower is in Paris.", " It was built",
                        mask_fn=lambda roles: torch.ones(1, 1, roles.shape[1], roles.shape[1], dtype=torch.bool).tril())
    assert broken["relative_diff"] > 1e-3, "a causal mask through the flex path leaks: the check can fail"


def test_dense_mask_helpers_refuse_a_flex_model_with_the_fix():
    with pytest.raises(ValueError, match="gem_inputs"):
        to_backend(gem_mask(torch.tensor([[Role.BOS, Role.PREFIX]])), FLEX, torch.float32)
    gem = tiny_gem("gemma3", k=1)
    masks = flex_attention_mask(torch.tensor([[Role.BOS, Role.PREFIX, Role.SPECIAL]]), gem.model.config)
    assert set(masks) == {"sliding_attention", "full_attention"}
    assert isinstance(model_attention_mask(gem_mask(torch.tensor([[1, 2, 3]])), gem.model.config, torch.float32), dict)


def test_the_automatic_choice_is_dense_on_a_cpu_and_for_short_rows():
    assert attention_for("cpu", 4096) == "sdpa" and attention_for("cuda", 64) == "sdpa"
    assert attention_for("cuda", 4096) == FLEX


def test_training_on_a_cpu_keeps_the_dense_path_and_refuses_flex_with_the_fix():
    from lab.training.setup import train_attention

    from .conftest import flat_config

    cfg = flat_config(model="tiny-llama")
    assert train_attention(cfg, torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="no FlexAttention backward on a CPU"):
        train_attention(cfg.updated({"run.attention": FLEX}), torch.device("cpu"))
