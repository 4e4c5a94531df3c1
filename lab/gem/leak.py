"""The leak check: under the GEM mask the suffix depends on the prefix only through S.

    report = leak_check(gem, "The Eiffel Tower is in Paris.", " It was built")

Runs `BOS prefix | S_1..S_k | suffix` once under the full GEM mask, then recomputes the suffix
logits from the S tokens' key/value cache alone (the prefix removed; a BOS or sink token the
suffix may see, `suffix_sees_bos`, is kept: it is content-free). Equal logits (up to float
noise) mean nothing leaked past S. A second prefix shows the suffix still *does* depend on the
prefix, through S.
"""

from __future__ import annotations

import torch

from . import forward
from .masks import Role, gem_mask
from .tokens import Row, pad_rows


def _suffix_logits_full(gem, prefix: str, suffix: str, mask_fn=None) -> tuple[torch.Tensor, list[int], dict]:
    """(n_suffix, V) logits at the suffix positions of the full masked forward; the suffix ids; and
    how `mask_fn`'s mask differs from the model's own (`mask_changes`; {} without mask_fn)."""
    pre = gem.bos + gem.text_ids(prefix)
    suf = gem.text_ids(suffix)
    row = Row.build(pre, gem.special_ids, suf, bos_token_id=gem.bos[0] if gem.bos else None)
    batch = pad_rows([row], gem.pad_token_id)
    with torch.inference_mode():
        roles = batch["roles"].to(gem.device)
        mask = None if mask_fn is None else mask_fn(roles)
        changes = {} if mask is None else mask_changes(mask, roles, gem.suffix_sees_bos)
        out = forward.logits(gem.model, batch["input_ids"].to(gem.device), roles, mask=mask,
                             suffix_sees_bos=gem.suffix_sees_bos)
    at = (batch["roles"][0] == Role.SUFFIX).nonzero().squeeze(-1).to(gem.device)
    return out[0, at].float().cpu(), suf, changes


def mask_changes(mask: torch.Tensor, roles: torch.Tensor, suffix_sees_bos: bool) -> dict:
    """How a (B, 1, T, T) mask differs from the model's own GEM mask for `roles` (B, T):
    {"suffix_sees_prefix": cells where a suffix token may now see a prefix token (a leak),
     "closed": cells the model's mask allows that this one forbids (e.g. the sink, when a mask is
     built without `suffix_sees_bos`: the suffix then reads differently even with no leak)}."""
    own = gem_mask(roles, suffix_sees_bos=suffix_sees_bos).to(mask.device)
    r = roles[:, None, :, None], roles[:, None, None, :]
    opened = mask & ~own & (r[0] == Role.SUFFIX) & (r[1] == Role.PREFIX)
    return {"suffix_sees_prefix": int(opened.sum()), "closed": int((own & ~mask).sum())}


def leak_check(gem, prefix: str, suffix: str, other_prefix: str | None = None, mask_fn=None) -> dict:
    """{"max_diff_from_s_cache": float, "relative_diff": float, "max_change_other_prefix": float | None,
    "suffix_tokens": n, "cached_entries": n}.

    max_diff_from_s_cache ~ 1e-5 of the logits' size (float noise: the two paths sum in different
    orders; `relative_diff` = max_diff / max |logit|, ~1e-5 in fp32; a leak gives ~0.1-1): no leak.
    max_change_other_prefix >> 0: the suffix still reads the prefix, through S. mask_fn: roles (B, T) -> (B, 1, T, T) bool mask for the full
    forward instead of `gem_mask` (e.g. a broken mask, to see the check catch the leak); the report
    then also says how it differs from the model's own mask (`mask_changes`: "suffix_sees_prefix",
    "closed").
    """
    gem.require_gem_tokens("the leak check")
    full, suf, changes = _suffix_logits_full(gem, prefix, suffix, mask_fn)
    cache, next_pos, _ = gem.special_cache(prefix)
    n_cached = cache.get_seq_length()  # k S entries (+ BOS / the sink when the suffix may see it): all the suffix sees
    with torch.inference_mode():
        from_cache = gem.continue_from_cache(cache, suf, next_pos).float().cpu()
    diff = float((full - from_cache).abs().max())
    report = {"max_diff_from_s_cache": diff, "relative_diff": diff / max(float(full.abs().max()), 1e-12),
              "suffix_tokens": len(suf),
              "cached_entries": n_cached, "max_change_other_prefix": None, **changes}
    if other_prefix is not None:
        other, _, _ = _suffix_logits_full(gem, other_prefix, suffix)
        report["max_change_other_prefix"] = float((other - full).abs().max())
    return report
