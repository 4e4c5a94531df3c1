"""`GemModel`: one decoder LM that embeds (through its GEM tokens) and generates.

    gem = lab.load("smollm2-135m")            # a base model: mean/last/prompteol/echo pooling
    gem = lab.load("checkpoints/gem-smollm2")  # a GEM checkpoint: pooling="gem" too
    E = gem.encode(["a text", "another"])      # (n, d) float32, L2-normalised
    gem.generate("The capital of France is")   # the ordinary LM, special tokens never emitted
    emb, answer = gem.embed_and_generate(doc, "\nQ: ...\nA:")   # one prefill for both
    gem.reconstruct("a short text")            # decode from the special tokens' KV cache alone
    gem.attention("a text", split=3)           # the mask and eager attention weights
"""

from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache, TextIteratorStreamer

from .attention import AttentionView, attention_view
from .beam import beam_from_cache, suppressed
from .checks import check_encode_args, check_k, check_positive_int, check_texts
from .config import AUTO_SINK, GemConfig, choose_sink_token, prefix_ids
from .forward import gem_inputs, hidden_states, model_dtype, unwrap
from .kv_cache import end_past_recording, full_prefill_cache, s_cache_positions, select_entries
from .masks import Role
from .pooling import POOLINGS, RowPlan, collate_plans, plan_row, pool_states, template_overhead, template_piece_ids
from .readout import ReadoutHead
from .tokens import Row, add_gem_tokens, gem_token_strings, pad_rows, text_ids

log = logging.getLogger(__name__)


RECONSTRUCT_MAX_TOKENS = 128  # reconstruct()'s default decode cap (+ the slack): far beyond what S holds (~30 tokens)
RECONSTRUCT_SLACK = 8  # tokens reconstruct() may decode past the text's length before the safeguard stops it


class GemModel:
    """A causal LM plus (optionally) trained GEM tokens. See the module docstring."""

    def __init__(self, model, tokenizer, gem_config: GemConfig | None = None, name: str = ""):
        """Wrap a causal LM and its tokenizer; neither is changed (no mode switch, no new tokens).

        The GEM tokens named by `gem_config` must already be in the tokenizer (`add_gem_tokens`,
        or `add_new_gem_tokens` for a fresh start); loaders put the model in eval mode.
        """
        self.model = model
        self.tokenizer = tokenizer
        self.gem_config = gem_config
        self.name = name
        self.max_length = gem_config.max_length if gem_config else 512
        self.special_ids = self._special_ids(tokenizer, gem_config)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.sink_ids, self.bos = self.prefix_ids(tokenizer, gem_config)
        self.pieces = template_piece_ids(tokenizer)
        self.readout_head = self._readout_head(gem_config)

    def _readout_head(self, gem_config: GemConfig | None) -> ReadoutHead | None:
        """A fresh (identity) head on the model's device when the config asks for one; loaders fill it."""
        if gem_config is None or not gem_config.readout_head:
            return None
        width = gem_config.k * self.hidden_size if gem_config.readout == "concat" else self.hidden_size
        return ReadoutHead(width, gem_config.readout_dim or None).to(self.device)

    @staticmethod
    def _special_ids(tokenizer, gem_config: GemConfig | None) -> list[int]:
        if gem_config is None:
            return []
        strings = gem_token_strings(gem_config.k)
        missing = [s for s in strings if s not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"the tokenizer lacks the GEM tokens {missing}; add them first with "
                             f"lab.gem.tokens.add_gem_tokens(model, tokenizer, k={gem_config.k})")
        return tokenizer.convert_tokens_to_ids(strings)

    @staticmethod
    def prefix_ids(tokenizer, gem_config: GemConfig | None) -> tuple[list[int], list[int]]:
        """(sink_ids, bos): what every text is read after (`lab.gem.config.prefix_ids`)."""
        return prefix_ids(tokenizer, gem_config)

    # -- properties -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(unwrap(self.model).parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return model_dtype(self.model)

    @property
    def is_gem(self) -> bool:
        """True when the model has trained GEM tokens (so `pooling="gem"` is meaningful)."""
        return self.gem_config is not None and self.gem_config.trained

    @property
    def hidden_size(self) -> int:
        return unwrap(self.model).config.hidden_size

    def embedding_dim(self, pooling: str | None = None) -> int:
        pooling = self.check_pooling(pooling)
        if pooling == "gem" and self.readout_head is not None:
            return self.readout_head.out_dim
        if pooling == "gem" and self.gem_config.readout == "concat":
            return self.gem_config.k * self.hidden_size
        return self.hidden_size

    # -- text -> ids ------------------------------------------------------------------------------
    def text_ids(self, text: str) -> list[int]:
        """The token ids this model reads for `text` (no BOS; special-token strings as plain text)."""
        return text_ids(self.tokenizer, [text])[0][0]

    def check_pooling(self, pooling: str | None) -> str:
        """The pooling to use: `pooling` checked against this model, or the default (gem / mean)."""
        if pooling is None:
            return "gem" if self.is_gem else "mean"
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if pooling == "gem" and self.gem_config is None:
            raise ValueError(
                f"{self.name or 'this model'} is a base model with no GEM tokens, so pooling='gem' is "
                f"undefined. Use pooling='mean' (the paper's baseline), 'last', 'prompteol' or 'echo', "
                f"or load a GEM checkpoint (lab.load('path/to/checkpoint'))."
            )
        return pooling

    def plan_rows(self, texts: list[str], pooling: str, max_length: int | None = None) -> list[RowPlan]:
        """The rows `encode` runs for `texts` under `pooling` (texts cut to fit `max_length`)."""
        max_length = max_length or self.max_length
        k = len(self.special_ids)
        extra, copies = template_overhead(pooling, self.pieces, k)
        budget = (max_length - len(self.bos) - extra) // copies
        ids, n_cut = text_ids(self.tokenizer, texts, budget)
        if n_cut:
            log.warning("%d of %d texts were longer than max_length=%d tokens and were truncated",
                        n_cut, len(texts), max_length)
        return [plan_row(pooling, t, self.bos, self.special_ids, self.pieces) for t in ids]

    # -- embeddings -------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, texts, batch_size: int = 32, normalize: bool = True, pooling: str | None = None,
               show_progress_bar: bool | None = None, max_length: int | None = None,
               convert_to_numpy: bool = True):
        """Embeddings of `texts`: (n, d) float32 numpy (or (d,) for a single string).

        pooling: "gem" (default for GEM checkpoints), "mean" (default for base models), "last",
        "prompteol", "echo". The LM head is never run. Texts are sorted by length into batches
        (less padding) and returned in input order. Texts over `max_length` tokens are truncated
        with one warning. Empty strings and non-strings raise ValueError / TypeError.
        """
        check_encode_args(texts, batch_size, max_length)
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        pooling = self.check_pooling(pooling)
        if not texts:
            return np.zeros((0, self.embedding_dim(pooling)), dtype=np.float32)
        plans = self.plan_rows(texts, pooling, max_length)
        order = sorted(range(len(plans)), key=lambda i: -len(plans[i].row.input_ids))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        show = len(batches) > 8 if show_progress_bar is None else show_progress_bar
        out = torch.empty(len(texts), self.embedding_dim(pooling), dtype=torch.float32)
        for idx in tqdm(batches, desc="encode", disable=not show, unit="batch"):
            batch = collate_plans([plans[i] for i in idx], self.pad_token_id)
            h, _ = hidden_states(self.model, batch["input_ids"].to(self.device), batch["roles"].to(self.device),
                                 suffix_sees_bos=self.suffix_sees_bos)
            emb = self.pooled(h, batch["pool"].to(self.device), pooling, normalize)
            out[idx] = emb.float().cpu()
        out = out[0] if single else out
        return out.numpy() if convert_to_numpy else out

    def pooled(self, hidden: torch.Tensor, pool: torch.Tensor, pooling: str, normalize: bool = True) -> torch.Tensor:
        """(B, d') embeddings from last-layer states (B, T, d) and the pooling weights of the row plans:
        the GEM readout (mean or concat over S, then the readout head if any) or a mean."""
        readout = self.gem_config.readout if pooling == "gem" else "mean"
        emb = pool_states(hidden, pool, readout)
        if pooling == "gem" and self.readout_head is not None:
            emb = self.readout_head(emb.float())
        return F.normalize(emb, dim=-1) if normalize else emb

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix (n, m) between two sets of embeddings."""
        a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
        return a @ b.T

    # -- generation -------------------------------------------------------------------------------
    @property
    def suffix_sees_bos(self) -> bool:
        return bool(self.gem_config and self.gem_config.suffix_attends_bos)

    def generate_ids(self, input_ids: torch.Tensor, attention_mask=None, cache=None, **kw) -> torch.Tensor:
        """New token ids (B, n) greedy-generated (unless do_sample=True) after `input_ids` (B, T) by
        the plain causal LM, GEM tokens suppressed. `cache`: a prefilled KV cache to continue from."""
        kw.setdefault("do_sample", False)
        kw.setdefault("max_new_tokens", 64)
        if self.special_ids:
            kw["suppress_tokens"] = list(self.special_ids) + list(kw.get("suppress_tokens") or [])
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = unwrap(self.model).generate(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
            cache=cache, pad_token_id=self.pad_token_id, **kw,
        )
        return out[:, input_ids.shape[1]:]

    def prompt_ids(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of a prompt (BOS as the tokenizer adds it; chat template if chat=True)."""
        if chat:
            return self.chat_ids([{"role": "user", "content": prompt}])
        return self.bos + self.text_ids(prompt)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation [{"role", "content"}, ...] through the tokenizer's chat
        template, ending with the assistant's turn opened."""
        if not self.tokenizer.chat_template:
            raise ValueError(f"{self.name or 'this model'} has no chat template; use chat=False")
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # a BatchEncoding in transformers 5
        return [int(i) for i in ids]

    @torch.inference_mode()
    def generate(self, prompt: str | list[str], max_new_tokens: int = 64, chat: bool = False, **kwargs):
        """Continue `prompt` with the plain causal LM (greedy unless do_sample=True). Returns the new
        text only (a list for a list of prompts). GEM tokens are suppressed: never emitted."""
        check_texts("prompt", prompt, allow_empty=False)
        check_positive_int("max_new_tokens", max_new_tokens)
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt)
        ids = [self.prompt_ids(p, chat) for p in prompts]
        rows = [Row(x, [int(Role.PREFIX)] * len(x)) for x in ids]
        batch = pad_rows(rows, self.pad_token_id, padding_side="left")
        new = self.generate_ids(batch["input_ids"], (batch["roles"] != Role.PAD).long(),
                                 max_new_tokens=max_new_tokens, **kwargs)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts[0] if single else texts

    def stream(self, prompt: str, max_new_tokens: int = 64, chat: bool = False, **kwargs):
        """Like `generate` for one prompt, but yields the text generated so far after each token
        (generation runs in a worker thread; same greedy tokens as `generate`)."""
        ids = torch.tensor([self.prompt_ids(prompt, chat)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        errors: list[BaseException] = []

        def work():
            try:
                with torch.inference_mode():
                    self.generate_ids(ids, max_new_tokens=max_new_tokens, streamer=streamer, **kwargs)
            except BaseException as e:  # surfaced in the caller's thread below
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text
        thread.join()
        if errors:
            raise errors[0]

    @torch.inference_mode()
    def embed_and_generate(self, document: str, prompt: str, max_new_tokens: int = 32,
                           pooling: str | None = None, normalize: bool = True, **kwargs):
        """One prefill of `document` gives its embedding and the KV cache that answering continues from.

        Under GEM the document tokens see only the causal past, so the cache built while reading
        `document | S` is, once the S entries are dropped, exactly the cache plain generation would
        build. Returns (embedding (d,), generated text); the text equals plain greedy generation
        on the ids `BOS + document + prompt`. pooling: "gem" (GEM checkpoints), "mean" or "last".
        """
        pooling = self.check_pooling(pooling)
        if pooling not in ("gem", "mean", "last"):
            raise ValueError(f"pooling={pooling!r} rewrites the document, so its prefill cannot be shared; "
                             f"use 'gem', 'mean' or 'last'")
        plan = self.plan_rows([document], pooling)[0]
        n_doc = sum(r != Role.SPECIAL for r in plan.row.roles)
        batch = collate_plans([plan], self.pad_token_id)
        cache = full_prefill_cache(self.model)
        h, _ = hidden_states(self.model, batch["input_ids"].to(self.device), batch["roles"].to(self.device),
                             use_cache=True, cache=cache)
        emb = self.pooled(h, batch["pool"].to(self.device), pooling, normalize)
        cache.crop(-(len(plan.row.input_ids) - n_doc))  # drop the S entries: the context is the document alone
        end_past_recording(cache)
        full = torch.tensor([plan.row.input_ids[:n_doc] + self.text_ids(prompt)])
        new = self.generate_ids(full, cache=cache, max_new_tokens=max_new_tokens, **kwargs)
        return emb[0].float().cpu().numpy(), self.tokenizer.decode(new[0], skip_special_tokens=True)

    # -- reconstruction and leak checks ---------------------------------------------------------
    def require_gem_tokens(self, what: str) -> None:
        """Raise a ValueError naming `what` when this model has no GEM tokens (a base model)."""
        if not self.special_ids:
            raise ValueError(f"{what} needs GEM tokens; {self.name or 'this model'} is a base model. "
                             f"Load a GEM checkpoint (lab.load('path/to/checkpoint')).")

    @torch.inference_mode()
    def special_cache(self, text: str) -> tuple[DynamicCache, int, torch.Tensor]:
        """Run `BOS + text | S_1..S_k` under the GEM mask and keep only the S entries of the KV
        cache (all layers), plus BOS / the sink when the suffix may see it (`suffix_sees_bos`).
        Returns (cache of k (+1) entries, next position id, logits at the last S)."""
        self.require_gem_tokens("special_cache")
        plan = self.plan_rows([text], "gem")[0]
        batch = collate_plans([plan], self.pad_token_id)
        full = full_prefill_cache(self.model)
        inputs = gem_inputs(self.model, batch["input_ids"].to(self.device), batch["roles"].to(self.device),
                            suffix_sees_bos=self.suffix_sees_bos)
        out = unwrap(self.model)(**inputs, use_cache=True, cache=full, logits_to_keep=1)
        keep = s_cache_positions(batch["roles"], batch["pool"] != 0, self.suffix_sees_bos)[0]
        keep = keep.nonzero().squeeze(-1).to(self.device)
        return select_entries(full, keep, unwrap(self.model).config), len(plan.row.input_ids), out.logits[:, -1]

    @torch.inference_mode()
    def continue_from_cache(self, cache: DynamicCache, input_ids: list[int], start_position: int) -> torch.Tensor:
        """Logits (len(input_ids), V) for tokens fed after `cache`, at positions start_position, ...
        (used by the leak test: suffix logits from the S cache alone)."""
        n_cached = cache.get_seq_length()
        ids = torch.tensor([input_ids], device=self.device)
        pos = torch.arange(start_position, start_position + len(input_ids), device=self.device)[None]
        mask = torch.ones(1, n_cached + len(input_ids), dtype=torch.long, device=self.device)
        return unwrap(self.model)(input_ids=ids, position_ids=pos, attention_mask=mask,
                                  cache=cache, use_cache=True).logits[0]

    def reconstruct(self, text: str, max_new_tokens: int | None = None, num_beams: int | None = None) -> str:
        """Decode a text from the special tokens' KV cache alone (paper Appendix B): the decoder
        sees no token of `text`, only the k cached S entries. `num_beams`: 1 greedy, > 1 beam search
        (lab.gem.beam), None the model's own setting (`GemConfig.reconstruct_beams`). It stops at EOS
        (which a model trained with `rows.reconstruction_end` emits where the text ends), else after
        the text's length + 8 tokens (at most 136: a safeguard)."""
        ids = self.reconstruct_ids(text, max_new_tokens, num_beams=num_beams)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.inference_mode()
    def reconstruct_ids(self, text: str, max_new_tokens: int | None = None, num_beams: int | None = None) -> list[int]:
        """Token ids decoded from the S cache of `text` (see `reconstruct`); the last S predicts
        the first token."""
        cache, pos, last_logits = self.special_cache(text)
        if max_new_tokens is None:  # a safeguard: a model trained with reconstruction_end stops at EOS
            read = min(len(self.text_ids(text)), self.max_length - len(self.bos) - len(self.special_ids))
            max_new_tokens = min(read, RECONSTRUCT_MAX_TOKENS) + RECONSTRUCT_SLACK
        beams = self.gem_config.reconstruct_beams if num_beams is None else num_beams  # 0 is refused, not the default
        if beams == 1:
            return self.greedy_from_cache(cache, pos, last_logits[0], max_new_tokens)
        return beam_from_cache(self, cache, pos, last_logits[0], max_new_tokens, beams)

    @torch.inference_mode()
    def greedy_from_cache(self, cache: DynamicCache, pos: int, logits: torch.Tensor, max_new_tokens: int) -> list[int]:
        """Greedy ids (GEM tokens suppressed, stopping at EOS) after `cache`, starting from the
        next-token `logits` (V,) of the token at position `pos` - 1; `cache` grows as it decodes."""
        out: list[int] = []
        for step in range(max_new_tokens):
            tok = int(suppressed(logits, self.special_ids).argmax())
            if tok == self.tokenizer.eos_token_id:
                break
            out.append(tok)
            if len(out) < max_new_tokens:
                logits = self.continue_from_cache(cache, [tok], pos + step)[-1]
        return out

    # -- attention view -------------------------------------------------------------------------
    def attention(self, text: str, split: int | None = None, k: int | None = None) -> AttentionView:
        """The GEM mask and per-layer, per-head attention weights (eager backend) for one text.

        The text's tokens are split at `split` (default: all prefix, S appended at the end, as for
        embedding) into `prefix | S_1..S_k | suffix`. k=0 (the default for base models) shows the
        plain causal model.
        """
        k = (self.gem_config.k if self.gem_config else 0) if k is None else k
        if k != 0:
            self.require_gem_tokens("attention with k > 0")
        check_k(k, len(self.special_ids))
        ids, _ = text_ids(self.tokenizer, [text], self.max_length - len(self.bos) - k)
        ids = ids[0]
        split = len(ids) if split is None else split
        if not 0 <= split <= len(ids):
            raise ValueError(f"split={split} is outside the text's {len(ids)} tokens")
        return attention_view(unwrap(self.model), self.tokenizer, self.bos + ids[:split], self.special_ids[:k],
                              ids[split:], self.bos[0] if self.bos else None, self.pad_token_id,
                              self.suffix_sees_bos)


def add_new_gem_tokens(gem: GemModel, k: int = 1, config: GemConfig | None = None, **settings) -> GemModel:
    """A GemModel with fresh (untrained) GEM tokens on the same backbone: the start of training.
    This is the explicit step that changes the model and tokenizer (new vocabulary rows). The GEM
    settings: `config` (e.g. a training config's `gem`), or k and GemConfig's other fields."""
    if config is None:
        if gem.name:
            settings.setdefault("base_model", gem.name)
        config = GemConfig(k=k, **settings)
    config = dataclasses.replace(config, trained=False)
    if config.sink_token == AUTO_SINK:
        config = dataclasses.replace(config, sink_token=choose_sink_token(gem.tokenizer))
        log.info("sink_token: auto -> %r for this tokenizer", config.sink_token)
    add_gem_tokens(gem.model, gem.tokenizer, config.k)
    return GemModel(gem.model, gem.tokenizer, config, name=gem.name)
