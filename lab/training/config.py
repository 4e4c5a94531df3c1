"""The training config (`TrainConfig`, saved as JSON next to every checkpoint) and its YAML files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..gem.config import suffix_attends_bos

ROW_MODES = ("reconstruction", "continuation")
POSITIVES = ("dropout", "article")


def _coerce_to_default_types(cfg) -> None:
    """Give every numeric field the type of its default: YAML reads `1e-4` as a string, `1` as an int."""
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if isinstance(default, bool) or not isinstance(default, (int, float)) or isinstance(value, bool):
            continue
        if isinstance(value, type(default)):
            continue
        try:
            number = float(value)
            if isinstance(default, int):
                if number != int(number):
                    raise ValueError
                number = int(number)
        except (TypeError, ValueError):
            kind = "an integer" if isinstance(default, int) else "a number"
            raise ValueError(f"{type(cfg).__name__}.{f.name} must be {kind}, got {value!r} "
                             f"(e.g. --{f.name}={default})") from None
        setattr(cfg, f.name, number)


@dataclass
class TrainConfig:
    """Everything a GEM training run needs (gem-method.md §3-4); saved with every checkpoint.

    Rows: a fraction `p_plain` of rows are plain text (ordinary NTP); the others get the k special
    tokens, as `text | S | text` (reconstruction) with probability `reconstruction_share`, else
    `text[:i] | S | text[i:]` (continuation, i drawn uniformly from [min_part, n - min_part]).
    Contrastive pairs: the query is `text | S`; the positive is the same text with tokens dropped
    (`positive="dropout"`, the paper) or another row of the same article with tokens dropped
    (`positive="article"`, Contriever-style: teaches topic, not surface overlap; rows of the same
    article are then never used as negatives).
    Losses: L = (1 - alpha) L_ntp + alpha L_cl, alpha = 0 for `ntp_steps` steps then `alpha_cl`
    (paper: 1; below 1 the NTP term keeps guarding the language model in the contrastive phase).
    Learning rate: linear warmup to `lr_ntp`, cosine to `lr_ntp * min_lr_ratio` at `ntp_steps`;
    then `lr_cl`, cosine to `lr_cl * min_lr_ratio` at `steps`.
    """

    model: str = "smollm2-135m"
    corpus: str = "data/build/wiki/train.jsonl"
    heldout: str = "data/build/wiki/heldout.jsonl"
    output_dir: str = "runs/gem"
    seed: int = 0
    init_from: str = ""  # a trained GEM checkpoint (folder, run or shipped name) whose weights the run starts from: adapter, GEM rows, readout head
    # rows
    k: int = 1
    p_plain: float = 0.8
    reconstruction_share: float = 1.0
    max_length: int = 128  # tokens per training sequence
    embed_max_length: int = 512  # tokens the trained model reads when embedding (saved in GemConfig)
    min_part: int = 2
    reconstruction_min_tokens: int = 0  # > 0: each reconstruction row's text is cut to a length drawn uniformly from [this, the row budget] (0: the whole budget)
    suffix_sees_bos: bool = False
    sink_token: str | None = None  # e.g. "<|endoftext|>": a sink in front of every row that the suffix may see (GemConfig)
    pack: bool = True  # pack several rows into each max_length sequence (segments never see each other)
    pack_views: bool = True  # pack the contrastive views too (same embeddings, fewer padded positions)
    fused_loss: bool = True  # NTP loss without full-vocabulary logits or head-weight gradients (same loss)
    # losses and schedule
    steps: int = 1000
    ntp_steps: int = 100
    drop_rate: float = 0.2
    alpha_cl: float = 1.0  # weight of the contrastive loss after the NTP phase (paper: 1, NTP off)
    span_views: float = 0.0  # share of query views cut to a few words of their text (lab.training.spans): words and phrases, not only sentences
    positive: str = "dropout"  # dropout: the row itself, tokens dropped (paper) | article: another row of the same article, tokens dropped
    distill_weight: float = 0.0  # > 0: add weight x KL(teacher || student) over in-batch similarities (contrastive phase)
    teacher: str = "minilm"  # the distillation teacher: an offline sentence encoder (lab.models.encoders)
    distill_scale: float = 20.0  # 1 / temperature of both similarity distributions in the distillation term
    distill_embedding_weight: float = 0.0  # > 0: add weight x (1 - cos(embedding, teacher's embedding)); needs readout_dim = teacher width
    anchor_weight: float = 0.0  # > 0: in steps with NTP, add weight x (1 - cos(embedding at each row's S, the init_from model's)): holds the embedding while a second stage trains (lab.training.objective)
    logit_scale_init: float = 20.0
    logit_scale_max: float = 100.0
    lr_ntp: float = 1e-4
    lr_cl: float = 1e-5
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    batch_size: int = 32
    grad_accum: int = 1
    # what is trained
    train_backbone: bool = True  # False: the backbone is frozen; only the GEM token rows (+ readout head) train
    readout_head: bool = False  # a small trained map on the pooled GEM state (lab.gem.readout)
    readout_dim: int = 0  # the head's output width (0 = hidden width, residual); e.g. 384 = all-MiniLM-L6-v2's space
    head_lr_scale: float = 1.0  # the readout head's learning rate, as a multiple of the schedule's
    head_init: str = "default"  # default | ridge: a projection head starts at the least-squares map to the teacher (lab.training.head_init)
    head_init_texts: int = 512  # training texts the ridge fit reads
    head_refit: bool = False  # ridge heads: fit again before the last step (the states moved while the head trained slowly)
    lora_r: int = 16  # 0 = full fine-tune (with train_backbone)
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    precision: str = "auto"  # auto | fp32 | bf16
    # bookkeeping
    eval_every: int = 100
    save_every: int = 100
    log_every: int = 10

    def __post_init__(self):
        _coerce_to_default_types(self)
        checks = [
            (0.0 <= self.p_plain <= 1.0, "p_plain must be in [0, 1]"),
            (0.0 <= self.reconstruction_share <= 1.0, "reconstruction_share must be in [0, 1]"),
            (0.0 <= self.drop_rate < 1.0, "drop_rate must be in [0, 1)"),
            (0.0 <= self.span_views <= 1.0, "span_views must be in [0, 1] (the share of query views cut to a span)"),
            (0.0 < self.alpha_cl <= 1.0, "alpha_cl must be in (0, 1]"),
            (self.k >= 1, "k must be >= 1"),
            (0 <= self.ntp_steps <= self.steps, "ntp_steps must be between 0 and steps"),
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.reconstruction_min_tokens >= 0, "reconstruction_min_tokens must be >= 0 (0 = whole texts)"),
            (self.embed_max_length >= 8, "embed_max_length must be >= 8"),
            (self.precision in ("auto", "fp32", "bf16"), "precision must be auto, fp32 or bf16"),
            (self.positive in POSITIVES, f"positive must be one of {POSITIVES}"),
            (self.batch_size >= 2, "batch_size must be >= 2 (in-batch negatives)"),
            (self.distill_weight >= 0.0, "distill_weight must be >= 0 (0 = no distillation)"),
            (self.distill_scale > 0.0, "distill_scale must be > 0"),
            (self.distill_embedding_weight >= 0.0, "distill_embedding_weight must be >= 0"),
            (self.readout_dim >= 0 and (self.readout_head or not self.readout_dim),
             "readout_dim > 0 needs readout_head: true (0 = no projection)"),
            (self.distill_embedding_weight == 0.0 or self.readout_head,
             "distill_embedding_weight > 0 compares the embedding with the teacher's: set readout_head: true and "
             "readout_dim to the teacher's width (384 for minilm)"),
            (self.anchor_weight >= 0.0, "anchor_weight must be >= 0 (0 = no anchor)"),
            (self.anchor_weight == 0.0 or bool(self.init_from),
             "anchor_weight > 0 holds the embedding of the model training starts from: set init_from "
             "(a GEM checkpoint, run or shipped name)"),
            (self.head_lr_scale > 0.0, "head_lr_scale must be > 0"),
            (self.head_init in ("default", "ridge"), "head_init must be default or ridge"),
            (not self.head_refit or self.head_init == "ridge", "head_refit needs head_init: ridge"),
            (self.head_init == "default" or (self.readout_dim > 0 and self.teacher),
             "head_init: ridge fits a projection head to the teacher: set readout_head: true, readout_dim "
             "(the teacher's width) and teacher"),
            (self.train_backbone or self.p_plain < 1.0, "a frozen backbone (train_backbone: false) learns nothing "
                                                        "from plain rows: set p_plain below 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {msg}")
        self.lora_targets = tuple(self.lora_targets)

    @property
    def suffix_attends_bos(self) -> bool:
        """Whether the suffix may see BOS / the sink token (the mask option, implied by a sink)."""
        return suffix_attends_bos(self.suffix_sees_bos, self.sink_token)


def read_config_file(path: str | Path) -> dict:
    """A YAML config; `base: other.yaml` (relative to this file) is read first and overridden."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (see configs/)")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    base = data.pop("base", None)
    if base:
        candidates = [path.parent / base, path.parent.parent / base]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: base config {base!r} not found next to it or one folder up")
        data = {**read_config_file(found), **data}
    return data


def config_from_args(path: str | None, overrides: list[str]) -> TrainConfig:
    """A TrainConfig from a YAML file plus `--key=value` overrides (values parsed as YAML)."""
    import yaml

    data = read_config_file(path) if path else {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ValueError(f"override {item!r} must look like --key=value")
        key, value = item[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; known: {', '.join(sorted(fields))}")
        data[key] = yaml.safe_load(value)
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
    return TrainConfig(**data)


def config_diff(config: TrainConfig, reference: TrainConfig, ignore: tuple[str, ...] = ("output_dir",)) -> dict:
    """{field: value in `config`} for every field where `config` differs from `reference` (what an
    ablation changes relative to the recipe); fields in `ignore` are left out."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)
            if f.name not in ignore and getattr(config, f.name) != getattr(reference, f.name)}
