"""Layer 4 — GEM training: the config and its YAML files, training rows (collate), losses, the
objective, data order, model set-up, run state on disk, and the loop (CPU or GPUs, exact resume)."""

from .config import TrainConfig

from .config_files import config_from_args
from .loop import train

__all__ = ["TrainConfig", "config_from_args", "train"]
