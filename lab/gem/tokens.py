"""GEM special tokens: registering S_1..S_k, tokenizing user text safely, assembling rows.

Special tokens are inserted at the token-id level, and every token gets a role (`masks.Role`),
so nothing downstream ever searches strings. User text becomes token ids in one place,
`text_ids`, with special-token parsing off (`split_special_tokens=True`): a text that happens to
contain "<|gem_0|>" (or "<|im_end|>") becomes ordinary pieces, never a special token. The model,
the training collator, evaluation and the app all call it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .masks import Role

log = logging.getLogger(__name__)


def gem_token_strings(k: int) -> list[str]:
    """The strings of the k GEM tokens: `<|gem_0|>`, `<|gem_1|>`, ..."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of GEM special tokens k must be a positive int, got {k!r}")
    return [f"<|gem_{i}|>" for i in range(k)]


def add_gem_tokens(model, tokenizer, k: int) -> list[int]:
    """Register k new special tokens on `tokenizer` and `model`; return their ids.

    The embedding matrix is resized and the new input rows set to the mean of the existing rows
    (gem-method.md §3). For an untied LM head the new output rows are set to the mean output row;
    generation suppresses these ids anyway, and the NTP loss never targets them. Tokens already
    present (a reload) are reused, not added twice.
    """
    strings = gem_token_strings(k)
    missing = [s for s in strings if s not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(strings)
    old_in = model.get_input_embeddings().weight
    n_old = old_in.shape[0]
    needed = max(ids) + 1
    if needed > n_old:
        with torch.no_grad():
            mean_in = old_in.float().mean(0)
            out = model.get_output_embeddings()
            tied = out is None or out.weight is old_in
            mean_out = None if tied else out.weight.float().mean(0)
            model.resize_token_embeddings(needed, mean_resizing=False)
            new_in = model.get_input_embeddings().weight
            new_in[n_old:] = mean_in.to(new_in.dtype)
            if not tied:
                new_out = model.get_output_embeddings().weight
                new_out[n_old:] = mean_out.to(new_out.dtype)
    return ids


def prepare_tokenizer(tokenizer):
    """The explicit preparation step for a tokenizer the lab will pad: a missing pad token becomes
    the EOS token (decoder LMs often ship without one; padding is masked anyway). Returns it."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def text_ids(tokenizer, texts: list[str], max_tokens: int | None = None) -> tuple[list[list[int]], int]:
    """Token ids of user texts: no BOS, special-token strings kept as plain text, each cut to
    `max_tokens` (None: no cut). Returns (ids per text, number of texts that were cut).

    The one way the lab turns user text into ids. Non-str texts raise TypeError; empty or
    whitespace-only texts raise ValueError, both naming the text's position.
    """
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text #{i} is {type(t).__name__}, not str: pass a string or a list of strings")
        if not t.strip():
            raise ValueError(f"text #{i} is empty or whitespace only: every text needs content")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"no room for text: {max_tokens} tokens left once the readout's own tokens are counted; "
                         f"raise max_length")
    ids = tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
    if max_tokens is None:
        return ids, 0
    n_cut = sum(len(x) > max_tokens for x in ids)
    return [x[:max_tokens] for x in ids], n_cut


def prefix_roles(ids: list[int], bos_token_id: int | None) -> list[int]:
    """Roles of a tokenized text: BOS for a leading BOS token, PREFIX for the rest."""
    roles = [int(Role.PREFIX)] * len(ids)
    if ids and bos_token_id is not None and ids[0] == bos_token_id:
        roles[0] = int(Role.BOS)
    return roles


@dataclass
class Row:
    """One GEM row before padding: `input_ids` and their `roles`, same length."""

    input_ids: list[int]
    roles: list[int]

    @classmethod
    def build(cls, prefix: list[int], special_ids: list[int], suffix: list[int] = (),
              bos_token_id: int | None = None) -> "Row":
        """`prefix | S_1..S_k | suffix` (special_ids may be empty: a plain row)."""
        roles = prefix_roles(prefix, bos_token_id)
        roles += [int(Role.SPECIAL)] * len(special_ids)
        roles += [int(Role.SUFFIX) if special_ids else int(Role.PREFIX)] * len(suffix)
        return cls(list(prefix) + list(special_ids) + list(suffix), roles)


def pad_rows(rows: list[Row], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Stack rows into `input_ids` and `roles`, both (B, T) long, padded on `padding_side`."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    T = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), T), pad_token_id, dtype=torch.long)
    roles = torch.full((len(rows), T), int(Role.PAD), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.input_ids)
        sl = slice(0, n) if padding_side == "right" else slice(T - n, T)
        input_ids[b, sl] = torch.tensor(r.input_ids)
        roles[b, sl] = torch.tensor(r.roles)
    return {"input_ids": input_ids, "roles": roles}
