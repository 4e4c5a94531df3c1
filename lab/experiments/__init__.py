"""Experiments that combine training, evaluation and figures: the ablation study (`ablations`),
reconstruction against training budget (`reconstruction_budget`) and the first-token sink probe on
word similarity (`sink_words`)."""
