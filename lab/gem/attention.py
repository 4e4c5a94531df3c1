"""What a model attends to under the GEM mask: the mask and eager attention weights of one row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .forward import attention_implementation, decoder_of, gem_inputs
from .masks import ROLE_NAMES, gem_mask
from .tokens import Row, pad_rows


@dataclass
class AttentionView:
    """What `GemModel.attention` returns, for notebooks and the app.

    tokens: T token strings; roles: T role names; mask: (T, T) bool (True = may attend);
    attentions: (L, H, T, T) float32 eager attention weights under that mask.
    """

    tokens: list[str]
    roles: list[str]
    mask: np.ndarray
    attentions: np.ndarray

    def share_by_layer(self, query_role: str, key_role: str, skip_first_query: bool = False) -> np.ndarray:
        """(L,) per layer: the mean attention mass (over heads and query tokens of `query_role`)
        landing on keys of `key_role`; NaN where the row has no such queries or keys."""
        queries = [i for i, r in enumerate(self.roles) if r == query_role]
        keys = [j for j, r in enumerate(self.roles) if r == key_role]
        queries = queries[1:] if skip_first_query else queries
        if not queries or not keys:
            return np.full(self.attentions.shape[0], np.nan)
        return self.attentions[:, :, queries][..., keys].sum(-1).mean(axis=(1, 2))

    def share_on(self, query_role: str, key_role: str, skip_first_query: bool = False) -> float:
        """Mean attention mass (over layers, heads and query tokens of `query_role`) that lands on
        keys of `key_role`. skip_first_query: leave out the first such query token (e.g. the first
        suffix token, which has only S and itself to look at)."""
        return float(self.share_by_layer(query_role, key_role, skip_first_query).mean())


@torch.inference_mode()
def attention_view(model, tokenizer, prefix_ids: list[int], special_ids: list[int], suffix_ids: list[int],
                   bos_token_id: int | None, pad_token_id: int, suffix_sees_bos: bool = False) -> AttentionView:
    """Eager attention of the row `prefix | special | suffix` (prefix_ids include BOS if any)."""
    row = Row.build(prefix_ids, special_ids, suffix_ids, bos_token_id=bos_token_id)
    batch = pad_rows([row], pad_token_id)
    device = next(model.parameters()).device
    with attention_implementation(model, "eager"):
        inputs = gem_inputs(model, batch["input_ids"].to(device), batch["roles"].to(device),
                            suffix_sees_bos=suffix_sees_bos)
        out = decoder_of(model)(**inputs, output_attentions=True)
    att = torch.stack([a[0].float() for a in out.attentions]).cpu().numpy()
    return AttentionView(tokens=[tokenizer.decode([t]) for t in row.input_ids],
                         roles=[ROLE_NAMES[r] for r in row.roles],
                         mask=gem_mask(batch["roles"], suffix_sees_bos=suffix_sees_bos)[0, 0].numpy(),
                         attentions=att)
