"""The GEM mask as a pure function of roles: literal grids, invariants, backends."""

import pytest
import torch

from lab.gem.masks import (
    Role,
    causal_mask,
    describe,
    gem_mask,
    gist_mask,
    model_attention_mask,
    position_ids_from_roles,
    sliding_window,
    to_backend,
)

P, B, S, X, PAD = Role.PREFIX, Role.BOS, Role.SPECIAL, Role.SUFFIX, Role.PAD


def grid(rows: str) -> torch.Tensor:
    """'1..\\n11.' -> bool tensor."""
    return torch.tensor([[c == "1" for c in r.split()[0]] for r in rows.strip().splitlines()])


def test_literal_grid_of_the_spec():
    roles = torch.tensor([[P, P, P, S, S, X, X, X]])
    expected = grid("""
        1.......
        11......
        111.....
        1111....
        111.1...
        ...111..
        ...1111.
        ...11111
    """)
    assert torch.equal(gem_mask(roles)[0, 0], expected)


def test_bos_and_padding_grid_and_suffix_sees_bos_option():
    roles = torch.tensor([[B, P, P, S, X, X, PAD]])
    expected = grid("""
        1......
        11.....
        111....
        1111...
        ...11..
        ...111.
        ......1
    """)
    assert torch.equal(gem_mask(roles)[0, 0], expected)
    with_bos = gem_mask(roles, suffix_sees_bos=True)[0, 0]
    assert with_bos[4, 0] and with_bos[5, 0] and not with_bos[4, 1]
    assert torch.equal(with_bos[:4], expected[:4])


def test_rows_without_specials_are_causal_and_left_padding():
    roles = torch.tensor([[PAD, PAD, B, P, P], [B, P, P, P, P]])
    m = gem_mask(roles)[:, 0]
    assert torch.equal(m[1], causal_mask(5))
    # left-padded row: causal among real tokens, pads seen by nobody, pads see themselves only
    assert torch.equal(m[0, 2:, 2:], causal_mask(3))
    assert not m[0, 2:, :2].any()
    assert torch.equal(m[0, :2], torch.eye(5, dtype=torch.bool)[:2])


@pytest.mark.parametrize("seed", range(5))
def test_invariants_on_random_batches(seed):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(6):  # different split points, k and padding per row
        n_pre, k, n_suf, n_pad = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in
                                  [(1, 6), (0, 4), (0, 5), (0, 4)])
        r = [B] + [P] * (n_pre - 1) + [S] * k + [X if k else P] * n_suf
        rows.append([PAD] * n_pad + r if seed % 2 else r + [PAD] * n_pad)
    T = max(map(len, rows))
    roles = torch.tensor([([PAD] * (T - len(r)) + r) if seed % 2 else (r + [PAD] * (T - len(r))) for r in rows])
    m = gem_mask(roles)[:, 0]
    q, k = roles[:, :, None], roles[:, None, :]
    assert m.diagonal(dim1=1, dim2=2).all(), "every row sees itself"
    assert m.any(-1).all(), "no fully masked query row"
    assert not (m & (k == PAD) & (q != PAD)).any(), "padding never seen"
    assert not (m & ~causal_mask(T)[None]).any(), "never sees the future"
    assert not (m & (q == X) & ((k == P) | (k == B))).any(), "suffix never sees the prefix"
    eye = torch.eye(T, dtype=torch.bool)[None]
    assert not (m & (q == S) & (k == S) & ~eye).any(), "special tokens do not see each other"
    # what the suffix sees is exactly: every special token of the row + earlier suffix tokens
    want = ((k == S) | (k == X)) & causal_mask(T)[None]
    assert torch.equal(m & (q == X), want & (q == X))


def test_no_nan_with_sdpa_on_padded_rows():
    roles = torch.tensor([[PAD, PAD, B, P, S, X], [B, P, P, P, S, X]])
    mask = gem_mask(roles)
    qkv = torch.randn(3, 2, 2, 6, 8)
    out = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
    assert torch.isfinite(out).all()


def test_segments_keep_packed_rows_apart_and_positions_restart():
    roles = torch.tensor([[B, P, S, X, B, P, P, S, X, PAD]])
    seg = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]])
    m = gem_mask(roles, seg)[0, 0]
    assert not m[4:, :4].any() and not m[:4, 4:].any()
    single = gem_mask(roles[:, 4:9])[0, 0]
    assert torch.equal(m[4:9, 4:9], single)
    assert position_ids_from_roles(roles, seg).tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 4, 0]]


def test_positions_are_contiguous_over_prefix_special_suffix_with_left_padding():
    roles = torch.tensor([[PAD, PAD, B, P, S, S, X]])
    assert position_ids_from_roles(roles).tolist() == [[0, 0, 0, 1, 2, 3, 4]]


def test_gist_mask_differs_only_in_special_to_special():
    roles = torch.tensor([[P, P, S, S, S, X]])
    gem, gist = gem_mask(roles)[0, 0], gist_mask(roles)[0, 0]
    diff = (gem != gist).nonzero().tolist()
    assert diff == [[3, 2], [4, 2], [4, 3]]


def test_sliding_window_band():
    m = sliding_window(gem_mask(torch.tensor([[P] * 6])), 2)[0, 0]
    assert m[5].tolist() == [False, False, False, False, True, True]


def test_backends():
    mask = gem_mask(torch.tensor([[P, P, S, X]]))
    assert to_backend(mask, "sdpa", torch.float32) is mask
    add = to_backend(mask, "eager", torch.float32)
    assert add.dtype == torch.float32 and (add[mask] == 0).all() and (add[~mask] == torch.finfo(torch.float32).min).all()
    with pytest.raises(ValueError, match="flash-attention"):
        to_backend(mask, "flash_attention_2", torch.float32)
    with pytest.raises(ValueError, match="takes a BlockMask.*gem_inputs"):
        to_backend(mask, "flex_attention", torch.float32)
    with pytest.raises(ValueError, match="not supported"):
        to_backend(mask, "paged_attention", torch.float32)


def test_model_attention_mask_per_layer_type():
    class Cfg:
        _attn_implementation = "sdpa"
        layer_types = ["sliding_attention", "full_attention"]
        sliding_window = 2

    mask = gem_mask(torch.tensor([[P] * 5]))
    out = model_attention_mask(mask, Cfg, torch.float32)
    assert set(out) == {"sliding_attention", "full_attention"}
    assert torch.equal(out["full_attention"], mask)
    assert torch.equal(out["sliding_attention"], sliding_window(mask, 2))


def test_describe_draws_the_grid():
    text = describe(gem_mask(torch.tensor([[P, S, X]])), ["p", "S", "x"])
    assert text.splitlines()[1:] == ["p ■  ⬚  ⬚", "S ■  ■  ⬚", "x ⬚  ■  ■"]


def test_bad_roles_shape():
    with pytest.raises(ValueError, match="batch, seq_len"):
        gem_mask(torch.tensor([P, S]))
