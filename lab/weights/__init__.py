"""Layer 2 — weights: where models come from and go to. The registry, GGUF conversion and its
cache, tiny models built in code, the loaders (`load_causal_lm`, `load` -> a `lab.gem.GemModel`),
the dtype policy, GEM checkpoints and exports. (The model class itself is `lab.gem.model.GemModel`.)"""

from .causal_lm import load_causal_lm
from .conversion import list_gem_models, list_models, prepare
from .loading import load
from .registry import DEFAULT_GEM, DEFAULT_MODEL, ModelNotAvailable

__all__ = ["DEFAULT_GEM", "DEFAULT_MODEL", "ModelNotAvailable", "list_gem_models", "list_models", "load", "load_causal_lm", "prepare"]
