"""The app's mask builder: pick a mask for one row of the GEM model, draw it, and run the leak check live.

    r = mask_builder(session, "The Eiffel Tower is in Paris. It was built in 1889.", split=8, kind="gem")
    r["mask"]      # plotly grid of the row `sink | prefix | S_1..S_k | suffix` under that mask
    r["info"]      # the leak check's number, said in words

The row's roles come from the text and the split (tokens before S are prefix, the rest suffix; the
model's own k special tokens and its sink in front). The mask is a pure function of those roles:

    gem     the model's own mask (`gem_mask`, with the sink the suffix may see)
    gist    GEM's, plus the special tokens seeing each other causally (gist tokens, Mu et al. 2023)
    causal  a plain decoder: every token sees every earlier one

"Break it" opens the cells GEM closes: every suffix query may see every earlier prefix key. The
leak check (`lab.gem.leak.leak_check`) then runs the model once under the chosen mask and once
from the S cache alone; the suffix logits agree (to float noise) only when nothing of the prefix
reaches the suffix except through S.
"""

from __future__ import annotations

import numpy as np
import torch

from ..gem.leak import leak_check
from ..gem.masks import ROLE_NAMES, Role, causal_mask, gem_mask, gist_mask
from ..gem.tokens import Row
from ..viz import figures
from .handlers import MAX_ATTENTION_TOKENS, Session, check_text, cut_to_tokens

MASK_KINDS = ("gem", "gist", "causal")
# relative logit difference below which the two paths agree: float noise, ~1e-5 of the largest logit in
# fp32 and ~2e-2 in bf16 (8 mantissa bits; the shipped model on a CPU with native bf16), where an open
# suffix->prefix cell or the gist mask moves it 0.16-0.45 in either dtype
NO_LEAK = {torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 5e-2}


def no_leak_below(dtype: torch.dtype) -> float:
    """The relative difference under which the leak check calls two paths equal, for a model in `dtype`."""
    return NO_LEAK.get(dtype, NO_LEAK[torch.float32])


def row_roles(gem, text: str, split: int) -> tuple[list[int], torch.Tensor, str, str]:
    """(input ids, roles (1, T), prefix text, suffix text) of `sink + prefix | S_1..S_k | suffix`,
    the text's tokens split after the first `split` (1 <= split < number of tokens)."""
    ids = gem.text_ids(text)
    if not 1 <= split < len(ids):
        raise ValueError(f"split={split}: the text has {len(ids)} tokens; the builder needs a prefix and a "
                         f"suffix, so pick a split from 1 to {len(ids) - 1}")
    pre, suf = ids[:split], ids[split:]
    row = Row.build(gem.bos + pre, gem.special_ids, suf, bos_token_id=gem.bos[0] if gem.bos else None)
    return row.input_ids, torch.tensor([row.roles]), gem.tokenizer.decode(pre), gem.tokenizer.decode(suf)


def built_mask(roles: torch.Tensor, kind: str, break_it: bool, suffix_sees_bos: bool) -> torch.Tensor:
    """(B, 1, T, T) bool mask of `kind` for `roles` (B, T); `break_it` lets suffix queries see every
    earlier prefix key.

        break_it on the GEM mask (p = prefix, S = special, x = suffix; ■ = opened):
                 p0 p1 S  x0 x1
            x0   ■  ■  ■  ■  ⬚
            x1   ■  ■  ■  ■  ■
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask {kind!r}: pick one of {', '.join(MASK_KINDS)}")
    own = gem_mask(roles, suffix_sees_bos=suffix_sees_bos)
    if kind == "gem":
        mask = own
    elif kind == "gist":
        mask = own | gist_mask(roles)
    else:
        real = roles != Role.PAD
        mask = (causal_mask(roles.shape[1], roles.device)[None] & real[:, None, :])[:, None] | own
    if break_it:
        q, k = roles[:, None, :, None], roles[:, None, None, :]
        T = roles.shape[1]
        mask = mask | ((q == Role.SUFFIX) & (k == Role.PREFIX) & causal_mask(T, roles.device))
    return mask


def _verdict(report: dict, kind: str, dtype: torch.dtype) -> str:
    rel, opened = report["relative_diff"], report["suffix_sees_prefix"]
    number = (f"suffix logits under this mask vs from the S cache alone: max difference "
              f"**{report['max_diff_from_s_cache']:.3g}** ({rel:.1e} of the largest logit)")
    if rel < no_leak_below(dtype):
        return (f"✓ **No leak.** {number}: float noise ({str(dtype).removeprefix('torch.')}). The suffix "
                f"knows the prefix only through S.")
    if opened:
        return (f"✗ **Leak.** {number}. {opened} suffix→prefix cell(s) are open: the suffix reads the "
                f"text directly, so S no longer has to carry it, and training on this mask would teach S nothing.")
    return (f"⚠ **Different, but not a leak.** {number}. No suffix→prefix cell is open: under the {kind} mask "
            f"the S tokens themselves read differently (they see each other), so their states differ from "
            f"the cache the model builds with its own mask.")


def mask_builder(session: Session, text: str, split: int = 6, kind: str = "gem", break_it: bool = False) -> dict:
    """{"mask": figure, "info": Markdown, "report": the leak check's dict, "warnings": [...]} for one
    row of the GEM model under the chosen mask (see the module docstring)."""
    _, gem = session.models()
    text, warnings = cut_to_tokens(gem, check_text(text), MAX_ATTENTION_TOKENS)
    ids, roles, prefix, suffix = row_roles(gem, text, int(split))
    mask = built_mask(roles, kind, bool(break_it), gem.suffix_sees_bos)
    report = leak_check(gem, prefix, suffix,
                        mask_fn=lambda r: built_mask(r, kind, bool(break_it), gem.suffix_sees_bos))
    tokens = [gem.tokenizer.decode([t]) for t in ids]  # as the attention view labels them
    names = [ROLE_NAMES[int(r)] for r in roles[0]]
    title = f"{kind} mask{' (broken: the suffix sees the prefix)' if break_it else ''} · " \
            f"{len(gem.special_ids)} S tokens{' · sink in front' if gem.bos else ''}"
    return {"mask": figures.mask_figure(np.asarray(mask[0, 0]), tokens, names, title),
            "info": _verdict(report, kind, gem.dtype), "report": report, "warnings": warnings}
