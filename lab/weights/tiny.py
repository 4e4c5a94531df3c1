"""Tiny random decoder LMs built in code, for tests and quick experiments.

Each one has the real architecture class (`LlamaForCausalLM`, `Qwen2ForCausalLM`,
`Gemma3ForCausalLM` with sliding-window layers) at toy size, with deterministic weights (a fixed
seed), and a byte-level tokenizer (every UTF-8 byte is a token, plus `<s>`, `</s>`, `<pad>`), so
no file or network access is needed. The tokenizers differ like the real families do: the llama
and gemma3 ones prepend `<s>` (BOS), the qwen2 one does not.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

TINY_ARCHITECTURES = ("llama", "qwen2", "gemma3")
BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def tiny_tokenizer(add_bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + `<s>`, `</s>`, `<pad>`."""
    byte_symbols = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(sorted(byte_symbols))}
    for s in (BOS, EOS, PAD):
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=512
    )
    fast.add_special_tokens({"additional_special_tokens": []})
    return fast


def tiny_config(arch: str, vocab_size: int, bos: int, eos: int, pad: int) -> PreTrainedConfig:
    """A toy config of the given family: 64 hidden, 4 heads, 2 KV heads (1 for gemma3), 2-3 layers."""
    ids = dict(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    if arch == "llama":
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
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHITECTURES}")


def build_tiny(arch: str, seed: int = 0, attn_implementation: str = "sdpa"):
    """(model, tokenizer) for `tiny-<arch>`; the same seed always gives the same weights."""
    tok = tiny_tokenizer(add_bos=arch != "qwen2")
    config = tiny_config(arch, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok
