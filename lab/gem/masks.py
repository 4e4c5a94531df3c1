"""GEM attention masks: pure functions of token roles.

Every token of a batch carries a role (see `Role`). The mask is computed from roles alone (plus
optional segment ids for packed rows), in one canonical format: bool `(B, 1, T, T)`,
True = query row may attend to key column. Backend adapters (`to_backend`) then turn it into
what the attention implementation wants, and `model_attention_mask` wraps it for layer types
(sliding-window layers get the same GEM rule, intersected with their window).

The GEM rule (gem-method.md §2), for one row `p0 p1 p2 | S0 S1 | x0 x1 x2`:

            p0 p1 p2 S0 S1 x0 x1 x2
        p0   ■  ⬚  ⬚  ⬚  ⬚  ⬚  ⬚  ⬚      prefix: causal
        p1   ■  ■  ⬚  ⬚  ⬚  ⬚  ⬚  ⬚
        p2   ■  ■  ■  ⬚  ⬚  ⬚  ⬚  ⬚
        S0   ■  ■  ■  ■  ⬚  ⬚  ⬚  ⬚      special: the whole prefix and itself,
        S1   ■  ■  ■  ⬚  ■  ⬚  ⬚  ⬚      not the other special tokens
        x0   ⬚  ⬚  ⬚  ■  ■  ■  ⬚  ⬚      suffix: every special token + earlier suffix,
        x1   ⬚  ⬚  ⬚  ■  ■  ■  ■  ⬚      never the prefix
        x2   ⬚  ⬚  ⬚  ■  ■  ■  ■  ■

A row without special tokens gets the plain causal mask. Padding is never attended to; a padding
query attends to itself only, so no query row is fully masked (SDPA would return NaN for it).
A BOS token behaves as prefix, except that with `suffix_sees_bos=True` the suffix may also see it
(the attention-sink ablation).
"""

from __future__ import annotations

from enum import IntEnum

import torch


class Role(IntEnum):
    """What a token is in a GEM row. Stored as a LongTensor (B, T) named `roles`."""

    PAD = 0
    BOS = 1
    PREFIX = 2
    SPECIAL = 3
    SUFFIX = 4


ROLE_NAMES = {r.value: r.name.lower() for r in Role}


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) bool lower triangle: query i may see key j iff j <= i."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def gem_mask(
    roles: torch.Tensor,
    segment_ids: torch.Tensor | None = None,
    suffix_sees_bos: bool = False,
) -> torch.Tensor:
    """The GEM mask for a batch of rows.

    Args:
        roles: (B, T) long, values of `Role`. Rows may have different split points, different
            numbers of special tokens (or none), and left or right padding.
        segment_ids: optional (B, T) long for packed rows: tokens only see tokens with the same
            segment id. Padding may carry any segment id.
        suffix_sees_bos: let suffix tokens also attend to BOS tokens (default False: the paper's
            literal rule).

    Returns:
        (B, 1, T, T) bool, True = may attend.

    Example (one row, BOS + 2 prefix, 1 special, 2 suffix, 1 pad on the right):

        roles = [[BOS, PREFIX, PREFIX, SPECIAL, SUFFIX, SUFFIX, PAD]]
                 b  p1 p2 S  x0 x1 pad
            b    ■  ⬚  ⬚  ⬚  ⬚  ⬚  ⬚
            p1   ■  ■  ⬚  ⬚  ⬚  ⬚  ⬚
            p2   ■  ■  ■  ⬚  ⬚  ⬚  ⬚
            S    ■  ■  ■  ■  ⬚  ⬚  ⬚
            x0   ⬚  ⬚  ⬚  ■  ■  ⬚  ⬚
            x1   ⬚  ⬚  ⬚  ■  ■  ■  ⬚
            pad  ⬚  ⬚  ⬚  ⬚  ⬚  ⬚  ■
    """
    if roles.dim() != 2:
        raise ValueError(f"roles must be (batch, seq_len), got shape {tuple(roles.shape)}")
    B, T = roles.shape
    idx = torch.arange(T, device=roles.device)
    same = torch.ones((), dtype=torch.bool, device=roles.device) if segment_ids is None else \
        segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, T, T) same segment
    allowed = gem_allowed(roles[:, :, None], roles[:, None, :],  # (B, T, 1) query, (B, 1, T) key roles
                          idx[:, None], idx[None, :], same, suffix_sees_bos)
    return allowed.expand(B, T, T)[:, None]


def gem_allowed(q_role: torch.Tensor, k_role: torch.Tensor, q_idx: torch.Tensor, k_idx: torch.Tensor,
                same_segment: torch.Tensor, suffix_sees_bos: bool = False) -> torch.Tensor:
    """The GEM rule for (query, key) pairs, elementwise on broadcastable tensors: whether a query
    of role `q_role` at position `q_idx` may attend to a key of role `k_role` at `k_idx`.
    `gem_mask` broadcasts it over a whole batch; FlexAttention's mask_mod (lab.gem.flex) calls it
    on single (b, q, kv) index tensors: one rule, two delivery formats."""
    # plain ints, not the IntEnum: under FlexAttention's vmap `tensor == Role.X` silently compares wrong
    pad, bos, prefix, special, suffix = (int(r) for r in (Role.PAD, Role.BOS, Role.PREFIX, Role.SPECIAL, Role.SUFFIX))
    is_context = lambda r: (r == prefix) | (r == bos)  # noqa: E731
    suffix_keys = (k_role == special) | (k_role == suffix)
    if suffix_sees_bos:
        suffix_keys = suffix_keys | (k_role == bos)
    eye = q_idx == k_idx
    allowed = (
        (is_context(q_role) & is_context(k_role))
        | ((q_role == special) & (is_context(k_role) | eye))
        | ((q_role == suffix) & suffix_keys)
    )
    allowed = allowed & (k_idx <= q_idx) & (k_role != pad) & same_segment
    return allowed | (eye & (q_role == pad))  # padding queries see themselves: no NaN rows


def gist_mask(roles: torch.Tensor) -> torch.Tensor:
    """The gist-token mask (Mu et al. 2023) for comparison: like GEM, except that the special
    (gist) tokens see each other causally. Same shapes and conventions as `gem_mask`."""
    T = roles.shape[1]
    base = gem_mask(roles)[:, 0]
    q, k = roles[:, :, None], roles[:, None, :]
    gist_pairs = (q == Role.SPECIAL) & (k == Role.SPECIAL) & causal_mask(T, roles.device)[None]
    return (base | gist_pairs)[:, None]


def sliding_window(mask: torch.Tensor, window: int) -> torch.Tensor:
    """Intersect a (B, 1, T, T) mask with a sliding window: query i sees key j only if i - j < window
    (the same index rule transformers uses), keeping the padding self-attention that avoids NaN."""
    T = mask.shape[-1]
    i = torch.arange(T, device=mask.device)
    band = (i[:, None] - i[None, :]) < window
    diag = torch.eye(T, dtype=torch.bool, device=mask.device)
    return mask & (band | diag)


def position_ids_from_roles(roles: torch.Tensor, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) long: contiguous positions 0, 1, 2, ... over the non-pad tokens of each row (and
    restarting at each segment of a packed row); padding gets 0."""
    real = (roles != Role.PAD).long()
    before = real.cumsum(-1) - real  # real tokens strictly before each position
    if segment_ids is not None:  # subtract the count before each segment's first index
        T = roles.shape[1]
        idx = torch.arange(T, device=roles.device).expand_as(roles)
        starts = torch.ones_like(roles, dtype=torch.bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(-1).values
        before = before - before.gather(-1, start_idx)
    pos = before
    return pos.clamp(min=0).masked_fill(real == 0, 0)


SUPPORTED_BACKENDS = ("sdpa", "eager")


def to_backend(mask: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """Convert a canonical bool mask to the format of an attention backend.

    sdpa: bool as-is (torch's SDPA takes True = attend). eager: additive float, 0 where allowed
    and the dtype's minimum elsewhere (transformers adds it to the scores). Flash-attention can
    only express causal + padding, so it cannot run GEM and is refused.
    """
    if attn_implementation == "sdpa":
        return mask
    if attn_implementation == "eager":
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(mask, zero, torch.finfo(dtype).min)
    if attn_implementation == "flex_attention":
        raise ValueError("a FlexAttention model takes a BlockMask, not a dense mask: build its inputs with "
                         "lab.gem.forward.gem_inputs (it calls lab.gem.flex.flex_attention_mask)")
    if "flash" in attn_implementation:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} cannot take GEM's custom attention mask "
            f"(flash-attention only knows causal + padding). Load the model with "
            f"attn_implementation='sdpa' (fast, default) or 'eager' (returns attention weights)."
        )
    raise ValueError(
        f"attn_implementation={attn_implementation!r} is not supported for GEM masks; use one of {SUPPORTED_BACKENDS}"
    )


def model_attention_mask(mask: torch.Tensor, config, dtype: torch.dtype):
    """What to pass as `attention_mask=` to a transformers decoder for a canonical (B,1,T,T) mask.

    Models with several layer types (Gemma3, Qwen2 with sliding windows) take a dict
    {layer_type: mask}; sliding layers get the GEM mask intersected with their window. Others
    take the 4D tensor, which transformers passes to attention unchanged (intersected here with
    the model's window if every layer has one: Mistral, Phi-3).
    """
    impl = getattr(config, "_attn_implementation", None) or "sdpa"
    layer_types = getattr(config, "layer_types", None)
    if not layer_types:
        window = getattr(config, "sliding_window", None)
        if window and getattr(config, "use_sliding_window", True) is not False:
            # one window on every layer (Mistral, Phi-3 with sliding_window): transformers applies it
            # to the masks it builds, never to a 4D mask it is given, so it is applied here
            mask = sliding_window(mask, window)
        return to_backend(mask, impl, dtype)
    out = {}
    for lt in set(layer_types):
        m = mask
        if lt == "sliding_attention" and getattr(config, "sliding_window", None):
            m = sliding_window(mask, config.sliding_window)
        out[lt] = to_backend(m, impl, dtype)
    return out


def describe(mask: torch.Tensor, labels: list[str] | None = None) -> str:
    """Draw one (T, T) mask as a grid of ■ (attend) and ⬚ (blocked), for docs and notebooks."""
    m = mask.squeeze()
    if m.dim() != 2:
        raise ValueError("describe() draws one (T, T) mask; index the batch first")
    T = m.shape[0]
    labels = labels or [str(i) for i in range(T)]
    w = max(len(s) for s in labels)
    head = " " * (w + 1) + " ".join(s[:2].ljust(2) for s in labels)
    rows = [f"{labels[i]:>{w}} " + " ".join("■ " if m[i, j] else "⬚ " for j in range(T)) for i in range(T)]
    return "\n".join([head] + [r.rstrip() for r in rows])
