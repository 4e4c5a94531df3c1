"""GEM Lab: one decoder LM that both embeds (through special tokens) and generates.

The public surface:
    lab.load(name_or_checkpoint)   -> GemModel (encode / generate / embed_and_generate / reconstruct / attention)
    lab.list_models()              -> the offline model registry
    lab.load_causal_lm(name)       -> (transformers model, tokenizer), the one loader of the lab
    lab.masks                      -> GEM attention masks as pure functions of token roles
"""

from .config import GemConfig
from .masks import Role, gem_mask
from .model import GemModel, load
from .registry import DEFAULT_MODEL, list_models, load_causal_lm, prepare

__all__ = ["DEFAULT_MODEL", "GemConfig", "GemModel", "Role", "gem_mask", "list_models", "load",
           "load_causal_lm", "prepare"]
__version__ = "0.1.0"
