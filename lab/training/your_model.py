"""Start GEM on your own model: check it, choose its per-model settings, write its recipe.

    python -m lab start ./my-llama-folder            # or a registry name, or a hub id when online
    python -m lab train --config configs/gem-my-llama-folder.yaml

`start_config` loads the model once and checks what GEM needs from it (`lab.gem.support`), then
writes a recipe copied from one of the lab's own (the laptop one by default, the GPU stage 1 with
`gpu=True`) with the model named and the per-model settings left to the code: the sink token
(`gem.sink_token: auto`, chosen per tokenizer) and LoRA's targets (the decoder blocks' linear
layers). It returns the checklist it printed, so a user sees what was chosen and why.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..gem.config import choose_sink_token
from ..gem.support import check_architecture, layer_linear_names
from ..storage import PROJECT_ROOT, atomic_file
from ..weights.loading import load

log = logging.getLogger(__name__)

RECIPES = {"laptop": "gem-smollm2-135m.yaml", "gpu": "gem-smollm2-135m-gpu.yaml"}


@dataclass
class ModelReport:
    """What `start_config` found in a model: each line of the checklist."""

    name: str
    family: str
    layers: int
    hidden: int
    parameters: int
    bos_prepended: bool
    sink_token: str | None
    lora_targets: list[str]
    chat_template: bool

    def lines(self) -> list[str]:
        return [
            f"✓ {self.name}: a {self.family} decoder, {self.layers} layers, d = {self.hidden}, "
            f"{self.parameters:,} parameters; GEM can set its attention mask",
            f"✓ sink: {'its own BOS, which the tokenizer puts in front of every text' if self.bos_prepended else repr(self.sink_token) + ' in front of every text (the tokenizer adds no BOS)'}",
            f"✓ LoRA on: {', '.join(self.lora_targets)}",
            "✓ readout head: 384 wide, fitted to all-MiniLM-L6-v2 (the teacher) whatever the model's width",
            f"{'✓' if self.chat_template else '·'} chat template: {'yes (not used in training; generate() reads plain text)' if self.chat_template else 'none (a base model)'}",
        ]


def inspect_model(name: str) -> ModelReport:
    """Load `name` and check it for GEM (a ValueError naming what is missing if it cannot run)."""
    gem = load(name, dtype="float32", device="cpu")
    check_architecture(gem.model)
    config = gem.model.config
    sink = choose_sink_token(gem.tokenizer)
    return ModelReport(name=name, family=config.model_type, layers=config.num_hidden_layers,
                       hidden=config.hidden_size, parameters=sum(p.numel() for p in gem.model.parameters()),
                       bos_prepended=sink is None and bool(gem.bos), sink_token=sink,
                       lora_targets=layer_linear_names(gem.model),
                       chat_template=bool(getattr(gem.tokenizer, "chat_template", None)))


def slug(name: str) -> str:
    """A file-name-safe short name for a model name, folder or hub id."""
    return re.sub(r"[^a-z0-9.]+", "-", Path(name.rstrip("/")).name.lower()).strip("-") or "model"


def start_config(name: str, out: str | Path | None = None, gpu: bool = False, force: bool = False) -> tuple[Path, ModelReport]:
    """Check `name` and write its GEM recipe (YAML) to `out` (default configs/gem-SLUG.yaml);
    returns (the recipe's path, the report). An existing file is kept unless `force`."""
    import yaml

    report = inspect_model(name)
    out = Path(out) if out else PROJECT_ROOT / "configs" / f"gem-{slug(name)}.yaml"
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it, or --out another file")
    recipe = yaml.safe_load((PROJECT_ROOT / "configs" / RECIPES["gpu" if gpu else "laptop"]).read_text())
    recipe["model"] = name
    recipe["gem"]["sink_token"] = "auto"
    recipe["run"]["output_dir"] = f"runs/gem-{slug(name)}"
    header = "\n".join(
        [f"# GEM on {name}: written by `python -m lab start` from configs/{RECIPES['gpu' if gpu else 'laptop']}.",
         "# Per-model settings are left to the code: gem.sink_token: auto (chosen per tokenizer) and",
         "# lora.targets at its default (the decoder blocks' linear layers). What it found:"]
        + [f"#   {line}" for line in report.lines()]
        + [f"# Train: python -m lab train --config {out}", ""])
    with atomic_file(out, "w", encoding="utf-8") as f:
        f.write(header + yaml.safe_dump(recipe, sort_keys=False))
    return out, report
