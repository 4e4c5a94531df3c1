"""Experiments that combine training, evaluation and figures: the ablation study (`ablations`) and
the first-token sink probe on word similarity (`sink_words`)."""
