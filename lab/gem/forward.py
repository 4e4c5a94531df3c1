"""The masked forward: a GEM batch through an unmodified transformers decoder.

The mask goes in through the public `attention_mask=` argument (4D, or a per-layer-type dict for
models with sliding-window layers) and positions through explicit `position_ids`. No modelling
code is forked or patched, so any decoder that accepts custom 4D masks works.
"""

from __future__ import annotations

import contextlib

import torch

from .flex import flex_attention_mask, uses_flex
from .masks import Role, causal_mask, gem_mask, model_attention_mask, position_ids_from_roles


def unwrap(model):
    """The `*ForCausalLM` under a peft wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_of(model):
    """The decoder stack (embeddings + layers + final norm), i.e. the model without its LM head."""
    return unwrap(model).get_decoder()


def model_dtype(model) -> torch.dtype:
    return next(unwrap(model).parameters()).dtype


def gem_inputs(model, input_ids: torch.Tensor, roles: torch.Tensor, segment_ids: torch.Tensor | None = None,
               suffix_sees_bos: bool = False, mask: torch.Tensor | None = None) -> dict:
    """Keyword arguments (input_ids, attention_mask, position_ids) for a GEM forward.

    input_ids, roles, segment_ids: (B, T) long on the model's device. mask: a canonical (B, 1, T, T)
    bool mask to use instead of `gem_mask(roles, ...)` (experiments, e.g. a deliberately broken mask).
    A model running FlexAttention gets a BlockMask of the same rule (`lab.gem.flex`); any other a
    dense mask in its backend's format (`lab.gem.masks.model_attention_mask`).
    """
    base = unwrap(model)
    if uses_flex(model):  # block-sparse from the roles: no (B, 1, T, T) tensor (lab.gem.flex)
        attention_mask = flex_attention_mask(roles, base.config, segment_ids, suffix_sees_bos, dense=mask)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "position_ids": position_ids_from_roles(roles, segment_ids)}
    mask = gem_mask(roles, segment_ids, suffix_sees_bos) if mask is None else mask
    if is_plain_causal(mask, roles):
        # The GEM mask is the causal mask here (e.g. one unpadded row with k=1 at the end): let the
        # model build its own, so SDPA can take its fused is_causal kernel instead of the slower
        # explicit-mask path. Same numbers (tested), less time on long rows.
        attention_mask = None
    else:
        attention_mask = model_attention_mask(mask, base.config, model_dtype(model))
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids_from_roles(roles, segment_ids),
    }


def is_plain_causal(mask: torch.Tensor, roles: torch.Tensor) -> bool:
    """True when a canonical (B, 1, T, T) mask is exactly the causal mask with no padding."""
    if bool((roles == Role.PAD).any()):
        return False
    T = mask.shape[-1]
    return bool(torch.equal(mask[:, 0], causal_mask(T, mask.device).expand(mask.shape[0], T, T)))


def hidden_states(model, input_ids, roles, segment_ids=None, suffix_sees_bos=False, **kwargs):
    """Last-layer hidden states after the final norm, (B, T, d); the LM head is skipped.

    Extra kwargs (use_cache, cache, output_attentions) go to the decoder; its full
    output is returned as the second item.
    """
    inputs = gem_inputs(model, input_ids, roles, segment_ids, suffix_sees_bos)
    out = decoder_of(model)(**inputs, **kwargs)
    return out.last_hidden_state, out


def logits(model, input_ids, roles, segment_ids=None, suffix_sees_bos=False, mask=None, **kwargs):
    """Full LM logits (B, T, V) under the GEM mask, or under `mask` if given (leak tests)."""
    inputs = gem_inputs(model, input_ids, roles, segment_ids, suffix_sees_bos, mask)
    return model(**inputs, **kwargs).logits


@contextlib.contextmanager
def attention_implementation(model, impl: str):
    """Temporarily switch the attention backend (e.g. to "eager" to get attention weights)."""
    base = unwrap(model)
    old = base.config._attn_implementation
    if old == impl:
        yield
        return
    base.set_attn_implementation(impl)
    try:
        yield
    finally:
        base.set_attn_implementation(old)
