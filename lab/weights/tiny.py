"""Tiny random decoder LMs built in code, for tests and quick experiments.

Each one has the real architecture class (`LlamaForCausalLM`, `Qwen2ForCausalLM`,
`Gemma3ForCausalLM` with sliding-window layers, `MistralForCausalLM` with a sliding window,
`Phi3ForCausalLM` with fused projections) at toy size, with deterministic weights (a fixed
seed), and a byte-level tokenizer (every UTF-8 byte is a token, plus the family's special tokens),
so no file or network access is needed. The tokenizers differ like the real families do: the llama
and gemma3 ones prepend `<s>` (BOS), the qwen2 one does not.

`tiny-smollm2` is the shipped backbone's shape in miniature: a llama whose tokenizer, like
SmolLM2's, prepends nothing and has SmolLM2's special tokens (`<|im_start|>`, `<|im_end|>`,
`<|endoftext|>`, the shipped model's sink), so a GEM model on it can be configured exactly like the
shipped one (sink, k, readout head; tests/conftest.py `shipped_like_gem`).
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

TINY_ARCHITECTURES = ("llama", "qwen2", "gemma3", "smollm2", "mistral", "phi3")
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# family -> (bos, eos, pad, whether every text starts with bos, the special tokens in vocabulary order)
TINY_TOKENS = {
    "llama": (BOS, EOS, PAD, True, (BOS, EOS, PAD)),
    "qwen2": (BOS, EOS, PAD, False, (BOS, EOS, PAD)),
    "gemma3": (BOS, EOS, PAD, True, (BOS, EOS, PAD)),
    "mistral": (BOS, EOS, PAD, True, (BOS, EOS, PAD)),
    "phi3": (BOS, EOS, PAD, True, (BOS, EOS, PAD)),
    "smollm2": ("<|im_start|>", "<|im_end|>", "<|im_end|>", False, ("<|im_start|>", "<|im_end|>", "<|endoftext|>")),
}


def tiny_tokenizer(add_bos: bool = True, family: str | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + the family's special tokens
    (`<s>`, `</s>`, `<pad>` unless `family` names another set, `TINY_TOKENS`)."""
    bos, eos, pad, family_bos, specials = TINY_TOKENS[family] if family else (BOS, EOS, PAD, add_bos, (BOS, EOS, PAD))
    add_bos = family_bos if family else add_bos
    byte_symbols = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(sorted(byte_symbols))}
    for s in specials:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, model_max_length=512
    )
    others = [s for s in specials if s not in (bos, eos, pad)]
    fast.add_special_tokens({"additional_special_tokens": others})
    return fast


def tiny_config(arch: str, vocab_size: int, bos: int, eos: int, pad: int) -> PreTrainedConfig:
    """A toy config of the given family (smollm2: a llama): 64 hidden, 4 heads, 2 KV heads (1 for gemma3), 2-3 layers."""
    ids = dict(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    if arch in ("llama", "smollm2"):
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            tie_word_embeddings=True, **ids,
        )
    if arch == "qwen2":
        return Qwen2Config(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            tie_word_embeddings=False, **ids,
        )
    if arch == "gemma3":
        # Two sliding-window layers (window 8) and one global layer, like the real 5:1 pattern.
        return Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
            sliding_window=8, max_position_embeddings=1024,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"], **ids,
        )
    if arch == "mistral":
        # a sliding window shorter than the test rows, as in the real family's configs
        return MistralConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, sliding_window=16,
            tie_word_embeddings=False, **ids,
        )
    if arch == "phi3":
        # fused projections (qkv_proj, gate_up_proj): LoRA targets differ from the llama family's
        return Phi3Config(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            tie_word_embeddings=False, **ids,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHITECTURES}")


def build_tiny(arch: str, seed: int = 0, attn_implementation: str = "sdpa"):
    """(model, tokenizer) for `tiny-<arch>`; the same seed always gives the same weights."""
    if arch not in TINY_TOKENS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHITECTURES}")
    tok = tiny_tokenizer(family=arch)
    config = tiny_config(arch, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok
