"""GEM masks for FlexAttention: the same role rule as `gem_mask`, as a `BlockMask`.

The dense path hands the model a (B, 1, T, T) bool: at 4,096 tokens and batch 8 that is 134 M
entries per call, and the blocks GEM forbids (the suffix never sees the prefix) are still computed
by SDPA and thrown away. FlexAttention takes a `mask_mod(b, h, q, kv) -> bool` instead, tabulated
once per batch into a `BlockMask` of 128 × 128 tiles: tiles the rule forbids entirely are skipped,
and nothing of size T × T is ever stored.

    mask_mod(b, h, q, kv) = gem_allowed(roles[b, q], roles[b, kv], q, kv,
                                        segment[b, q] == segment[b, kv], suffix_sees_bos)

`gem_allowed` is the rule `gem_mask` broadcasts (lab.gem.masks), so the two paths cannot drift
apart; tests/test_flex.py checks them equal, token for token, on every row kind.

It reaches an unmodified transformers model the public way: loaded (or switched) with
`attn_implementation="flex_attention"`, a model takes a `BlockMask` (or a {layer_type: BlockMask}
dict for sliding-window layers) as `attention_mask=`; `lab.gem.forward.gem_inputs` builds it from
the roles when the model runs FlexAttention. Torch (2.13) runs FlexAttention's backward only on
GPUs: on a CPU it serves inference, and training keeps the dense path (`attention_for` says
which path a run takes when its config says "auto").
"""

from __future__ import annotations

import torch

from .masks import Role, gem_allowed

FLEX = "flex_attention"


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except ImportError:
        return False
    return True


def uses_flex(model) -> bool:
    """Whether the model (or the *ForCausalLM under a peft wrapper) runs FlexAttention."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    return getattr(base.config, "_attn_implementation", None) == FLEX


def gem_block_mask(roles: torch.Tensor, segment_ids: torch.Tensor | None = None, suffix_sees_bos: bool = False,
                   window: int | None = None, dense: torch.Tensor | None = None):
    """A FlexAttention `BlockMask` (B, 1, T, T) of the GEM rule for `roles` (B, T).

    segment_ids: (B, T) for packed rows (tokens see only their own segment). window: a sliding
    window (query i sees key j only if i - j < window, as transformers' sliding layers do).
    dense: a canonical (B, 1, T, T) bool mask to tabulate instead of the rule (leak tests with a
    deliberately broken mask).
    """
    from torch.nn.attention.flex_attention import create_block_mask

    if roles.dim() != 2:
        raise ValueError(f"roles must be (batch, seq_len), got shape {tuple(roles.shape)}")
    B, T = roles.shape
    segments = torch.zeros_like(roles) if segment_ids is None else segment_ids

    def gem_mod(b, h, q, kv):
        allowed = dense[b, 0, q, kv] if dense is not None else gem_allowed(
            roles[b, q], roles[b, kv], q, kv, segments[b, q] == segments[b, kv], suffix_sees_bos)
        if window is not None:
            allowed = allowed & ((q - kv < window) | (q == kv))
        return allowed

    return create_block_mask(gem_mod, B, None, T, T, device=roles.device)


def flex_attention_mask(roles: torch.Tensor, config, segment_ids: torch.Tensor | None = None,
                        suffix_sees_bos: bool = False, dense: torch.Tensor | None = None):
    """What to pass as `attention_mask=` to a FlexAttention model: a BlockMask, or for models with
    several layer types (Gemma3, Qwen2 with sliding windows) {layer_type: BlockMask}, the sliding
    layers' intersected with their window (as `model_attention_mask` does for dense masks)."""
    layer_types = getattr(config, "layer_types", None)
    if not layer_types:
        return gem_block_mask(roles, segment_ids, suffix_sees_bos, dense=dense)
    out = {}
    for lt in set(layer_types):
        window = getattr(config, "sliding_window", None) if lt == "sliding_attention" else None
        out[lt] = gem_block_mask(roles, segment_ids, suffix_sees_bos, window=window, dense=dense)
    return out


FLEX_MIN_TOKENS = 1024  # 8 of FlexAttention's 128-token blocks: below, there is little to skip


def attention_for(device: torch.device | str, tokens: int) -> str:
    """The attention implementation the lab picks where a caller does not, for sequences of
    `tokens`: FlexAttention on a CUDA device once sequences span several 128-token blocks (the
    blocks GEM forbids are skipped, and no (B, 1, T, T) mask is built), SDPA with the dense mask
    otherwise: on a CPU (torch has no FlexAttention backward there, and compiles it per shape) and
    for short rows, where a single block holds the whole sequence (BENCHMARKS.md "FlexAttention")."""
    cuda = torch.device(device).type == "cuda"
    return FLEX if cuda and tokens >= FLEX_MIN_TOKENS and flex_available() else "sdpa"


def forbidden_share(roles: torch.Tensor, segment_ids: torch.Tensor | None = None) -> float:
    """Share of the causal (query, key) pairs of real tokens that the GEM rule forbids (across
    packed segments too): the work a block-sparse path can skip and a dense one computes and discards."""
    real = roles != Role.PAD
    T = roles.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=roles.device).tril()[None] & real[:, :, None] & real[:, None, :]
    from .masks import gem_mask

    allowed = gem_mask(roles, segment_ids)[:, 0] & causal
    return 1.0 - float(allowed.sum()) / max(float(causal.sum()), 1.0)
