"""The training config: `TrainConfig`, nested by component, read from YAML and saved as JSON next to
every checkpoint (`train_config.json`).

    model: smollm2-135m          the backbone (registry name, folder or hub id)
    gem:        GemConfig        what the model becomes: k GEM tokens, sink, readout (gem_config.json)
    rows:       RowsConfig       the training text and the rows made from it (gem-method.md §3)
    objective:  ObjectiveConfig  the paper's loss: L = (1 - alpha) L_ntp + alpha L_cl (§4)
    extensions: ExtensionsConfig the lab's optional terms and views beyond the paper (all off by default)
    optim:      OptimConfig      steps, batch, learning-rate schedule
    lora:       LoraConfig       what trains: a LoRA adapter, the whole backbone, or only the GEM rows
    run:        RunConfig        where it writes, precision, seed, logging and saving

In YAML each group is a mapping (`gem: {k: 5}`), on the command line a dotted key (`--gem.k=5`).
An unknown or misspelt key, or a value of the wrong type, is an error that names the key and the
nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

from ..gem.config import GemConfig

POSITIVES = ("dropout", "article")
PRECISIONS = ("auto", "fp32", "bf16")
ATTENTIONS = ("auto", "sdpa", "flex_attention", "eager")
HEAD_INITS = ("default", "ridge")


@dataclass
class RowsConfig:
    """The training text and its rows. A share `p_plain` of rows is plain text (ordinary NTP); the
    others get the k GEM tokens S, as `text | S | text` (reconstruction) with probability
    `reconstruction_share`, else `text[:i] | S | text[i:]` (continuation, i drawn from
    [min_part, n - min_part]). Rows are packed `max_length` tokens to a sequence (segments never
    see each other)."""

    corpus: str = "data/build/wiki/train.jsonl"
    heldout: str = "data/build/wiki/heldout.jsonl"
    max_length: int = 128  # tokens per training sequence
    p_plain: float = 0.8
    reconstruction_share: float = 1.0
    min_part: int = 2
    reconstruction_min_tokens: int = 0  # > 0: reconstruction texts cut to a random length from this many tokens
    reconstruction_end: bool = False  # end each copy with the tokenizer's EOS, learned: reconstruct() stops there
    pack: bool = True


@dataclass
class ObjectiveConfig:
    """The paper's objective: L = (1 - alpha) L_ntp + alpha L_cl, alpha = 0 for `ntp_steps` steps,
    then `alpha_cl` (paper: 1). L_cl is InfoNCE between `text | S` and the same text with each
    token dropped with probability `drop_rate`, other rows of the batch as negatives, with a
    learned logit scale starting at `logit_scale_init` (capped at `logit_scale_max`)."""

    ntp_steps: int = 100
    alpha_cl: float = 1.0
    drop_rate: float = 0.2
    logit_scale_init: float = 20.0
    logit_scale_max: float = 100.0


@dataclass
class ExtensionsConfig:
    """The lab's additions to the paper, each off by default (docs/training.md says what each does).

    positive: "dropout" (the paper) or "article" (another row of the same article, tokens dropped).
    span_views: share of query views cut to a few words of their text.
    anchor_weight: > 0 holds the embedding at S to `run.init_from`'s while a second stage trains.
    distill_weight: > 0 pulls in-batch similarities to the `teacher`'s (KL, scale `distill_scale`).
    distill_embedding_weight: > 0 pulls the embedding onto the teacher's (needs gem.readout_dim =
        the teacher's width).
    head_*: how the readout head (gem.readout_head) trains: its learning-rate multiple, and
        "ridge": start it at the least-squares map to the teacher when the contrastive phase
        starts (`head_refit`: again before the last step; `head_init_texts` texts).
    """

    positive: str = "dropout"
    span_views: float = 0.0
    anchor_weight: float = 0.0
    distill_weight: float = 0.0
    distill_embedding_weight: float = 0.0
    distill_scale: float = 20.0
    teacher: str = "minilm"
    head_lr_scale: float = 1.0
    head_init: str = "default"
    head_init_texts: int = 512
    head_refit: bool = False


@dataclass
class OptimConfig:
    """AdamW; linear warmup to `lr_ntp`, cosine to `lr_ntp * min_lr_ratio` at `objective.ntp_steps`,
    then `lr_cl`, cosine to `lr_cl * min_lr_ratio` at `steps`."""

    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr_ntp: float = 1e-4
    lr_cl: float = 1e-5
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0

# the llama family's names; left at this default, lora.targets are chosen per model by the code
# (`lab.training.setup.lora_targets`: every linear layer in the decoder blocks)
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraConfig:
    """What trains: a LoRA adapter of rank `r` (0: the whole backbone), or, with
    `train_backbone: false`, only the GEM token rows (and the readout head)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: tuple = DEFAULT_LORA_TARGETS  # left so: the decoder blocks' linear layers, whatever the family
    train_backbone: bool = True


@dataclass
class RunConfig:
    """Where a run writes and how it keeps books. `init_from`: a trained GEM checkpoint (folder, run
    or shipped name) whose weights the run starts from. `precision`: auto picks bf16 on a GPU or a
    CPU with native bf16, else fp32. `attention`: auto picks FlexAttention on a GPU for rows of 1,024
    tokens or more (block-sparse GEM masks), SDPA with the dense mask otherwise (`lab.gem.flex.attention_for`)."""

    output_dir: str = "runs/gem"
    init_from: str = ""
    seed: int = 0
    precision: str = "auto"
    attention: str = "auto"
    eval_every: int = 100
    save_every: int = 100
    log_every: int = 10
    keep_last: int = 3  # checkpoints kept besides the best and the final one; 0 = keep every one
    best_metric: str = ""  # a logged metric, higher is better (e.g. eval_lee50_spearman): its best checkpoint is kept


GROUPS = {"gem": GemConfig, "rows": RowsConfig, "objective": ObjectiveConfig, "extensions": ExtensionsConfig,
          "optim": OptimConfig, "lora": LoraConfig, "run": RunConfig}
TRAINING_SETS = ("base_model", "trained")  # GemConfig fields the run sets itself
TITLES = {"gem": "what the model becomes: k GEM tokens, sink, readout (saved as gem_config.json)",
          "rows": "the training text and the rows made from it",
          "objective": "the paper's loss: L = (1 - alpha) L_ntp + alpha L_cl",
          "extensions": "the lab's additions beyond the paper (0 / default = off)",
          "optim": "steps, batch and learning-rate schedule", "lora": "what trains",
          "run": "where it writes, precision, seed, logging and saving"}


@dataclass
class TrainConfig:
    """Everything a GEM training run needs (gem-method.md §3-4), by component; see the module doc."""

    model: str = "smollm2-135m"
    gem: GemConfig = field(default_factory=GemConfig)
    rows: RowsConfig = field(default_factory=RowsConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    extensions: ExtensionsConfig = field(default_factory=ExtensionsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        for name, kind in GROUPS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _build(kind, value, name))
            elif not isinstance(value, kind):
                raise TypeError(f"TrainConfig.{name} must be a {kind.__name__} or a mapping, got {value!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"TrainConfig.model must name a model, got {self.model!r}")
        self.gem = dataclasses.replace(self.gem, base_model=self.model, trained=False)
        self.lora.targets = tuple(self.lora.targets)
        for ok, msg in _checks(self):
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")

    def updated(self, changes: dict[str, Any]) -> "TrainConfig":
        """A new config with `changes` applied: {"optim.steps": 200, "gem.k": 5, ...} (validated)."""
        data = self.to_dict()
        for key, value in changes.items():
            set_dotted(data, key, value)
        return TrainConfig.from_dict(data)

    def to_dict(self) -> dict:
        """Nested plain dict (what train_config.json holds); GemConfig's run-set fields left out."""
        data = dataclasses.asdict(self)
        for key in TRAINING_SETS:
            data["gem"].pop(key)
        data["lora"]["targets"] = list(data["lora"]["targets"])
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainConfig":
        """A TrainConfig from a nested dict; every key checked (`source` names it in errors)."""
        data = dict(data)
        unknown = [k for k in data if k != "model" and k not in GROUPS]
        if unknown:
            raise ValueError(unknown_key_message(unknown[0], source))
        groups = {}
        for name, kind in GROUPS.items():
            section = data.get(name) or {}
            if not isinstance(section, dict):
                raise ValueError(f"{source}: `{name}` must be a mapping of settings, got {section!r}")
            if name == "gem":
                for key in TRAINING_SETS:
                    if key in section:
                        raise ValueError(f"{source}: gem.{key} is set by training"
                                         + (" (set `model` instead)" if key == "base_model" else ""))
            groups[name] = _build(kind, section, name, source)
        return cls(model=data.get("model", cls.model), **groups)

    def describe(self) -> str:
        """The config as YAML-like text, the paper's knobs first, one comment line per group."""
        import json

        data = self.to_dict()
        lines = [f"model: {json.dumps(data.pop('model'))}"]
        for name, values in data.items():
            lines.append(f"{name}:  # {TITLES[name]}")
            lines += [f"  {key}: {json.dumps(value)}" for key, value in values.items()]
        return "\n".join(lines)


def _checks(cfg: TrainConfig) -> list[tuple[bool, str]]:
    """(holds, what to set) for every rule across fields."""
    r, o, x, p, lo, run, g = cfg.rows, cfg.objective, cfg.extensions, cfg.optim, cfg.lora, cfg.run, cfg.gem
    return [
        (0.0 <= r.p_plain <= 1.0, "rows.p_plain must be in [0, 1]"),
        (0.0 <= r.reconstruction_share <= 1.0, "rows.reconstruction_share must be in [0, 1]"),
        (r.max_length >= 8, "rows.max_length must be >= 8"),
        (r.min_part >= 1, "rows.min_part must be >= 1"),
        (r.reconstruction_min_tokens >= 0, "rows.reconstruction_min_tokens must be >= 0 (0 = whole texts)"),
        (0.0 <= o.drop_rate < 1.0, "objective.drop_rate must be in [0, 1)"),
        (0.0 < o.alpha_cl <= 1.0, "objective.alpha_cl must be in (0, 1]"),
        (0 <= o.ntp_steps <= p.steps, "objective.ntp_steps must be between 0 and optim.steps"),
        (0.0 < o.logit_scale_init <= o.logit_scale_max, "objective.logit_scale_init must be in (0, logit_scale_max]"),
        (p.steps >= 1, "optim.steps must be >= 1"),
        (p.batch_size >= 2, "optim.batch_size must be >= 2 (in-batch negatives)"),
        (p.grad_accum >= 1, "optim.grad_accum must be >= 1 (micro-batches per step)"),
        (p.warmup_steps >= 0 and p.lr_ntp > 0 and p.lr_cl > 0, "optim: learning rates must be > 0, warmup_steps >= 0"),
        (0.0 <= p.min_lr_ratio <= 1.0, "optim.min_lr_ratio must be in [0, 1]"),
        (p.grad_clip >= 0.0 and p.weight_decay >= 0.0, "optim.grad_clip and optim.weight_decay must be >= 0"),
        (lo.r >= 0 and lo.alpha > 0, "lora.r must be >= 0 (0 = full fine-tune) and lora.alpha > 0"),
        (bool(lo.targets), "lora.targets must name at least one module"),
        (lo.train_backbone or r.p_plain < 1.0, "a frozen backbone (lora.train_backbone: false) learns nothing "
                                               "from plain rows: set rows.p_plain below 1"),
        (run.precision in PRECISIONS, f"run.precision must be one of {PRECISIONS}"),
        (run.attention in ATTENTIONS, f"run.attention must be one of {ATTENTIONS}"),
        (min(run.eval_every, run.save_every) >= 0 and run.log_every >= 1,
         "run.eval_every and run.save_every must be >= 0 (0 = never), run.log_every >= 1"),
        (run.keep_last >= 0, "run.keep_last must be >= 0 (0 keeps every checkpoint)"),
        (x.positive in POSITIVES, f"extensions.positive must be one of {POSITIVES}"),
        (0.0 <= x.span_views <= 1.0, "extensions.span_views must be in [0, 1] (the share of query views cut to a span)"),
        (min(x.distill_weight, x.distill_embedding_weight, x.anchor_weight) >= 0.0,
         "extensions: distill_weight, distill_embedding_weight and anchor_weight must be >= 0 (0 = off)"),
        (x.distill_scale > 0.0 and x.head_lr_scale > 0.0, "extensions.distill_scale and head_lr_scale must be > 0"),
        (x.distill_embedding_weight == 0.0 or g.readout_head,
         "extensions.distill_embedding_weight > 0 compares the embedding with the teacher's: set gem.readout_head: "
         "true and gem.readout_dim to the teacher's width (384 for minilm)"),
        (x.anchor_weight == 0.0 or bool(run.init_from),
         "extensions.anchor_weight > 0 holds the embedding of the model training starts from: set run.init_from "
         "(a GEM checkpoint, run or shipped name)"),
        (x.head_init in HEAD_INITS, f"extensions.head_init must be one of {HEAD_INITS}"),
        (not x.head_refit or x.head_init == "ridge", "extensions.head_refit needs extensions.head_init: ridge"),
        (x.head_init == "default" or (g.readout_dim > 0 and bool(x.teacher)),
         "extensions.head_init: ridge fits a projection head to the teacher: set gem.readout_head: true, "
         "gem.readout_dim (the teacher's width) and extensions.teacher"),
        (x.head_init_texts >= 1, "extensions.head_init_texts must be >= 1"),
    ]


# -- reading, typing and naming keys ---------------------------------------------------------------

def all_keys() -> list[str]:
    """Every dotted key a config accepts: "model", "gem.k", "rows.p_plain", ..."""
    keys = ["model"]
    for name, kind in GROUPS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(kind)
                 if not (name == "gem" and f.name in TRAINING_SETS)]
    return keys


def unknown_key_message(key: str, source: str) -> str:
    keys = all_keys()
    moved = [k for k in keys if k.split(".")[-1] == key.split(".")[-1]]
    near = moved or difflib.get_close_matches(key, keys, n=1, cutoff=0.5) or \
        difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in keys], n=1, cutoff=0.6)
    hint = ""
    if near:
        full = next((k for k in keys if k == near[0] or k.endswith("." + near[0])), near[0])
        hint = f"; did you mean `{full}`?"
    return f"{source}: unknown config key `{key}`{hint} (every key: docs/training.md)"


def _build(kind, values: dict, group: str, source: str = "config"):
    """`kind(**values)` with every key known and every value of its field's type."""
    hints = typing.get_type_hints(kind)
    names = {f.name for f in dataclasses.fields(kind)}
    out = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(unknown_key_message(f"{group}.{key}", source))
        out[key] = _typed(value, hints[key], f"{group}.{key}", source)
    return kind(**out)


def _typed(value, hint, key: str, source: str):
    """`value` as the type `hint` names (YAML reads `1e-4` as a string, `1` as an int), or a
    clear error; booleans must be true or false, not "no" or 0."""
    def fail(kind):
        return ValueError(f"{source}: {key} must be {kind}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if hint in (int, float):
        if isinstance(value, bool):
            raise fail("an integer" if hint is int else "a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise fail("an integer" if hint is int else "a number") from None
        if hint is int:
            if number != int(number):
                raise fail("an integer")
            return int(number)
        return number
    if hint is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if hint == (str | None) or hint == typing.Optional[str]:
        if value is not None and not isinstance(value, str):
            raise fail("a string or null")
        return value
    if hint is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise fail("a list of names")
        return tuple(value)
    return value


def set_dotted(data: dict, key: str, value) -> None:
    if key == "model":
        data["model"] = value
        return
    group, _, name = key.partition(".")
    if group not in GROUPS or not name:
        raise ValueError(unknown_key_message(key, "override"))
    data.setdefault(group, {})[name] = value
