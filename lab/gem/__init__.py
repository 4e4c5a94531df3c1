"""Layer 1 — the GEM method on an unmodified decoder: roles and masks, special tokens, the masked
forward, pooling, the KV-cache surgery, and `GemModel` (encode / generate / embed_and_generate /
reconstruct / attention). Depends only on `lab.storage`, torch and transformers."""

from .attention import AttentionView
from .config import GemConfig
from .masks import Role, gem_mask
from .model import GemModel, add_new_gem_tokens
from .tokens import add_gem_tokens, gem_token_strings, text_ids

__all__ = ["AttentionView", "GemConfig", "GemModel", "Role", "add_gem_tokens", "add_new_gem_tokens", "gem_mask",
           "gem_token_strings", "text_ids"]
