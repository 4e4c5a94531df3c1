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

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache

from .config import GemConfig
from .forward import attention_implementation, decoder_of, gem_inputs, hidden_states, model_dtype, unwrap
from .masks import Role, gem_mask
from .pooling import POOLINGS, collate_plans, plan_row, pool_states, template_overhead, template_piece_ids
from .registry import DEFAULT_MODEL, SHIPPED_GEM, load_causal_lm, shipped_gem_path
from .tokens import Row, gem_token_strings, pad_rows

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def as_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


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


def full_prefill_cache(model) -> DynamicCache:
    """An empty KV cache that keeps every prefilled entry, sliding-window layers included, until
    `end_past_recording` (so entries can be selected or cropped after a masked prefill)."""
    cache = DynamicCache(config=unwrap(model).config)
    cache.activate_past_recording()
    return cache


def end_past_recording(cache: DynamicCache) -> None:
    """Back to normal cache behaviour after a `full_prefill_cache` prefill and crop (sliding layers
    then keep only their window again)."""
    for layer in cache.layers:
        if getattr(layer, "record_past", False):
            layer.crop(0)  # restrict the layer to its window (a no-op for short caches)
            layer.record_past = False


class GemModel:
    """A causal LM plus (optionally) trained GEM tokens. See the module docstring."""

    def __init__(self, model, tokenizer, gem: GemConfig | None = None, name: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.gem = gem
        self.name = name
        self.max_length = gem.max_length if gem else 512
        self.special_ids = tokenizer.convert_tokens_to_ids(gem_token_strings(gem.k)) if gem else []
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.bos = self._bos_prefix(tokenizer)
        self.pieces = template_piece_ids(tokenizer)
        model.eval()

    @staticmethod
    def _bos_prefix(tokenizer) -> list[int]:
        """[bos_id] if the tokenizer prepends BOS to every text, else []."""
        with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
        bos = tokenizer.bos_token_id
        return [bos] if bos is not None and with_special and with_special[0] == bos else []

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
        return self.gem is not None and self.gem.trained

    @property
    def hidden_size(self) -> int:
        return unwrap(self.model).config.hidden_size

    def embedding_dim(self, pooling: str | None = None) -> int:
        pooling = self._check_pooling(pooling)
        if pooling == "gem" and self.gem.readout == "concat":
            return self.gem.k * self.hidden_size
        return self.hidden_size

    # -- text -> ids ------------------------------------------------------------------------------
    def _text_ids(self, texts: list[str], budget: int) -> tuple[list[list[int]], int]:
        """Token ids of each text without BOS, special-token strings kept as plain text, cut to
        `budget` tokens. Returns (ids, number truncated). Empty or non-str texts raise."""
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text #{i} is {type(t).__name__}, not str: pass a string or a list of strings")
            if not t.strip():
                raise ValueError(f"text #{i} is empty or whitespace only: every text needs content")
        if budget < 1:
            raise ValueError(f"max_length={self.max_length} leaves no room for text in this readout")
        ids = self.tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
        n_cut = sum(len(x) > budget for x in ids)
        return [x[:budget] for x in ids], n_cut

    def _check_pooling(self, pooling: str | None) -> str:
        if pooling is None:
            return "gem" if self.is_gem else "mean"
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if pooling == "gem" and self.gem is None:
            raise ValueError(
                f"{self.name or 'this model'} is a base model with no GEM tokens, so pooling='gem' is "
                f"undefined. Use pooling='mean' (the paper's baseline), 'last', 'prompteol' or 'echo', "
                f"or load a GEM checkpoint (lab.load('path/to/checkpoint'))."
            )
        return pooling

    def _plans(self, texts, pooling, max_length=None):
        max_length = max_length or self.max_length
        k = len(self.special_ids)
        extra, copies = template_overhead(pooling, self.pieces, k)
        budget = (max_length - len(self.bos) - extra) // copies
        ids, n_cut = self._text_ids(texts, budget)
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
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        pooling = self._check_pooling(pooling)
        if not texts:
            return np.zeros((0, self.embedding_dim(pooling)), dtype=np.float32)
        plans = self._plans(texts, pooling, max_length)
        order = sorted(range(len(plans)), key=lambda i: -len(plans[i].row.input_ids))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        show = len(batches) > 8 if show_progress_bar is None else show_progress_bar
        readout = self.gem.readout if pooling == "gem" else "mean"
        out = torch.empty(len(texts), self.embedding_dim(pooling), dtype=torch.float32)
        for idx in tqdm(batches, desc="encode", disable=not show, unit="batch"):
            batch = collate_plans([plans[i] for i in idx], self.tokenizer.pad_token_id)
            h, _ = hidden_states(self.model, batch["input_ids"].to(self.device), batch["roles"].to(self.device),
                                 suffix_sees_bos=bool(self.gem and self.gem.suffix_sees_bos))
            emb = pool_states(h, batch["pool"].to(self.device), readout)
            if normalize:
                emb = F.normalize(emb, dim=-1)
            out[idx] = emb.float().cpu()
        out = out[0] if single else out
        return out.numpy() if convert_to_numpy else out

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix (n, m) between two sets of embeddings."""
        a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
        return a @ b.T

    # -- generation -------------------------------------------------------------------------------
    def _generate_ids(self, input_ids: torch.Tensor, attention_mask=None, cache=None, **kw) -> torch.Tensor:
        kw.setdefault("do_sample", False)
        kw.setdefault("max_new_tokens", 64)
        if self.special_ids:
            kw["suppress_tokens"] = list(self.special_ids) + list(kw.get("suppress_tokens") or [])
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = unwrap(self.model).generate(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
            cache=cache, pad_token_id=self.tokenizer.pad_token_id, **kw,
        )
        return out[:, input_ids.shape[1]:]

    def prompt_ids(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of a prompt (BOS as the tokenizer adds it; chat template if chat=True)."""
        if chat:
            if not self.tokenizer.chat_template:
                raise ValueError(f"{self.name or 'this model'} has no chat template; use chat=False")
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                      add_generation_prompt=True, tokenize=True)
        ids, _ = self._text_ids([prompt], budget=10**9)
        return self.bos + ids[0]

    @torch.inference_mode()
    def generate(self, prompt: str | list[str], max_new_tokens: int = 64, chat: bool = False, **kwargs):
        """Continue `prompt` with the plain causal LM (greedy unless do_sample=True). Returns the new
        text only (a list for a list of prompts). GEM tokens are suppressed: never emitted."""
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt)
        ids = [self.prompt_ids(p, chat) for p in prompts]
        rows = [Row(x, [int(Role.PREFIX)] * len(x)) for x in ids]
        batch = pad_rows(rows, self.tokenizer.pad_token_id, padding_side="left")
        new = self._generate_ids(batch["input_ids"], (batch["roles"] != Role.PAD).long(),
                                 max_new_tokens=max_new_tokens, **kwargs)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts[0] if single else texts

    def stream(self, prompt: str, max_new_tokens: int = 64, chat: bool = False, **kwargs):
        """Like `generate` for one prompt, but yields the text generated so far after each token
        (generation runs in a worker thread; same greedy tokens as `generate`)."""
        import threading

        from transformers import TextIteratorStreamer

        ids = torch.tensor([self.prompt_ids(prompt, chat)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        errors: list[BaseException] = []

        def work():
            try:
                with torch.inference_mode():
                    self._generate_ids(ids, max_new_tokens=max_new_tokens, streamer=streamer, **kwargs)
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
        pooling = self._check_pooling(pooling)
        if pooling not in ("gem", "mean", "last"):
            raise ValueError(f"pooling={pooling!r} rewrites the document, so its prefill cannot be shared; "
                             f"use 'gem', 'mean' or 'last'")
        plan = self._plans([document], pooling)[0]
        n_doc = sum(r != Role.SPECIAL for r in plan.row.roles)
        batch = collate_plans([plan], self.tokenizer.pad_token_id)
        cache = full_prefill_cache(self.model)
        h, _ = hidden_states(self.model, batch["input_ids"].to(self.device), batch["roles"].to(self.device),
                             use_cache=True, cache=cache)
        readout = self.gem.readout if pooling == "gem" else "mean"
        emb = pool_states(h, batch["pool"].to(self.device), readout)
        if normalize:
            emb = F.normalize(emb, dim=-1)
        cache.crop(-(len(plan.row.input_ids) - n_doc))  # drop the S entries: the context is the document alone
        end_past_recording(cache)
        prompt_ids, _ = self._text_ids([prompt], budget=10**9)
        full = torch.tensor([plan.row.input_ids[:n_doc] + prompt_ids[0]])
        new = self._generate_ids(full, cache=cache, max_new_tokens=max_new_tokens, **kwargs)
        return emb[0].float().cpu().numpy(), self.tokenizer.decode(new[0], skip_special_tokens=True)

    # -- reconstruction and leak checks ---------------------------------------------------------
    def _require_gem_tokens(self, what: str):
        if not self.special_ids:
            raise ValueError(f"{what} needs GEM tokens; {self.name or 'this model'} is a base model. "
                             f"Load a GEM checkpoint (lab.load('path/to/checkpoint')).")

    @torch.inference_mode()
    def special_cache(self, text: str) -> tuple[DynamicCache, int, torch.Tensor]:
        """Run `BOS + text | S_1..S_k` under the GEM mask and keep only the S entries of the KV
        cache (all layers). Returns (cache of k entries, next position id, logits at the last S)."""
        self._require_gem_tokens("special_cache")
        plan = self._plans([text], "gem")[0]
        batch = collate_plans([plan], self.tokenizer.pad_token_id)
        config = unwrap(self.model).config
        full = full_prefill_cache(self.model)
        inputs = gem_inputs(self.model, batch["input_ids"].to(self.device), batch["roles"].to(self.device),
                            suffix_sees_bos=self.gem.suffix_sees_bos)
        out = unwrap(self.model)(**inputs, use_cache=True, cache=full, logits_to_keep=1)
        keep = batch["pool"][0].nonzero().squeeze(-1).to(self.device)
        only_s = DynamicCache(config=config)
        for i, layer in enumerate(full.layers):
            only_s.update(layer.keys.index_select(2, keep), layer.values.index_select(2, keep), i)
        return only_s, len(plan.row.input_ids), out.logits[:, -1]

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

    def reconstruct(self, text: str, max_new_tokens: int | None = None) -> str:
        """Greedy-decode a text from the special tokens' KV cache alone (paper Appendix B): the
        decoder sees no token of `text`, only the k cached S entries. Exact for short inputs on a
        model trained with reconstruction rows."""
        return self.tokenizer.decode(self.reconstruct_ids(text, max_new_tokens), skip_special_tokens=True)

    def text_ids(self, text: str) -> list[int]:
        """The token ids this model reads for `text` (no BOS; special-token strings as plain text)."""
        return self._text_ids([text], 10**9)[0][0]

    @torch.inference_mode()
    def reconstruct_ids(self, text: str, max_new_tokens: int | None = None) -> list[int]:
        """Token ids greedy-decoded from the S cache of `text` (see `reconstruct`)."""
        cache, pos, last_logits = self.special_cache(text)
        if max_new_tokens is None:
            max_new_tokens = len(self.text_ids(text)) + 8
        suppress = torch.tensor(self.special_ids, device=self.device)
        out: list[int] = []
        logits = last_logits[0]
        for step in range(max_new_tokens):
            logits = logits.clone()
            logits[suppress] = float("-inf")
            tok = int(logits.argmax())
            if tok == self.tokenizer.eos_token_id:
                break
            out.append(tok)
            if len(out) < max_new_tokens:
                logits = self.continue_from_cache(cache, [tok], pos + step)[-1]
        return out

    # -- attention view -------------------------------------------------------------------------
    @torch.inference_mode()
    def attention(self, text: str, split: int | None = None, k: int | None = None) -> AttentionView:
        """The GEM mask and per-layer, per-head attention weights (eager backend) for one text.

        The text's tokens are split at `split` (default: all prefix, S appended at the end, as for
        embedding) into `prefix | S_1..S_k | suffix`. k=0 (the default for base models) shows the
        plain causal model.
        """
        k = (self.gem.k if self.gem else 0) if k is None else k
        if k > 0:
            self._require_gem_tokens("attention with k > 0")
            if k > len(self.special_ids):
                raise ValueError(f"k={k} but this model has {len(self.special_ids)} GEM tokens")
        ids, _ = self._text_ids([text], self.max_length - len(self.bos) - k)
        ids = ids[0]
        split = len(ids) if split is None else split
        if not 0 <= split <= len(ids):
            raise ValueError(f"split={split} is outside the text's {len(ids)} tokens")
        row = Row.build(self.bos + ids[:split], self.special_ids[:k], ids[split:],
                        bos_token_id=self.bos[0] if self.bos else None)
        batch = pad_rows([row], self.tokenizer.pad_token_id)
        with attention_implementation(self.model, "eager"):
            inputs = gem_inputs(self.model, batch["input_ids"].to(self.device), batch["roles"].to(self.device),
                                suffix_sees_bos=bool(self.gem and self.gem.suffix_sees_bos))
            out = decoder_of(self.model)(**inputs, output_attentions=True)
        att = torch.stack([a[0].float() for a in out.attentions]).cpu().numpy()
        tokens = [self.tokenizer.decode([t]) for t in row.input_ids]
        from .masks import ROLE_NAMES
        return AttentionView(tokens=tokens, roles=[ROLE_NAMES[r] for r in row.roles],
                             mask=gem_mask(batch["roles"])[0, 0].numpy(), attentions=att)


def add_new_gem_tokens(gem: GemModel, k: int = 1, **config) -> GemModel:
    """A GemModel with k fresh (untrained) GEM tokens on the same backbone: the start of training."""
    from .tokens import add_gem_tokens

    add_gem_tokens(gem.model, gem.tokenizer, k)
    cfg = GemConfig(k=k, base_model=gem.name or DEFAULT_MODEL, trained=False, **config)
    return GemModel(gem.model, gem.tokenizer, cfg, name=gem.name)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX). Without them
    (e.g. AVX2-only CPUs) torch's bf16 matmul is emulated and ~6x slower than fp32 (measured on
    a 2-core AMD EPYC, AVX2: fp32 469 tok/s vs bf16 84 tok/s, SmolLM2-135M forward)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 where it is fast (CUDA, or CPUs with native bf16), fp32 elsewhere.

    bf16 and fp32 embeddings agree closely but not perfectly (SmolLM2-135M, 300 news sentences:
    mean-pooling cosine mean 0.9999, min 0.987; last-token min 0.9998), so pass dtype="float32"
    when bit-for-bit comparability across machines matters.
    """
    if str(device).startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def load(name_or_path: str = DEFAULT_MODEL, dtype=None, device: str | None = None,
         attn_implementation: str = "sdpa") -> GemModel:
    """A `GemModel` from a registry name, an HF folder, a hub id (online), a GEM checkpoint folder
    (or a training run: its newest checkpoint, also as `runs/NAME/last`), or the name of a shipped
    GEM checkpoint ("gem-smollm2-135m")."""
    if str(name_or_path) in SHIPPED_GEM:
        name_or_path = shipped_gem_path(str(name_or_path))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = as_dtype(dtype) if dtype is not None else default_dtype(device)
    from .checkpoint import resolve_run

    path = resolve_run(Path(str(name_or_path)).expanduser())
    if (path / GemConfig.FILENAME).is_file():
        from .checkpoint import load_checkpoint

        return load_checkpoint(path, dtype=dtype, device=device, attn_implementation=attn_implementation)
    model, tok = load_causal_lm(str(name_or_path), dtype=dtype, device=device,
                                attn_implementation=attn_implementation)
    return GemModel(model, tok, None, name=str(name_or_path))
