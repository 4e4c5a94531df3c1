"""GEM Lab: one decoder LM that both embeds (through special tokens) and generates.

The public surface:
    lab.load(name_or_checkpoint)   -> GemModel (encode / generate / embed_and_generate / reconstruct / attention)
    lab.list_models()              -> the offline model registry
    lab.load_causal_lm(name)       -> (transformers model, tokenizer), the one loader of the lab
    lab.gem_mask(roles)            -> the GEM attention mask, a pure function of token roles

The layers (a lower layer never imports a higher one; tests/test_architecture.py checks it):
    storage  <  gem  <  weights  <  corpora  <  evaluation, training  <  viz  <  app, course, check  <  cli
"""

from .gem import GemConfig, GemModel, Role, gem_mask
from .weights import DEFAULT_MODEL, list_models, load, load_causal_lm, prepare

__all__ = ["DEFAULT_MODEL", "GemConfig", "GemModel", "Role", "gem_mask", "list_models", "load",
           "load_causal_lm", "prepare"]
__version__ = "0.1.0"
