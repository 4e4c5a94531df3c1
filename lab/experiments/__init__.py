"""Experiments that combine training, evaluation and figures: the ablation study (`ablations`)."""
