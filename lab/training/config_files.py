"""Config files and saved configs: YAML with `base:`, `--group.key=value` overrides, the flat
format of runs saved before the nested config, and dotted views for comparing two configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainConfig, all_keys, set_dotted, unknown_key_message


def read_config_file(path: str | Path) -> dict:
    """A YAML config as a nested dict; `base: other.yaml` (relative to this file) is read first and
    its groups updated key by key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (see configs/)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config is a mapping of settings, got {type(data).__name__}")
    base = data.pop("base", None)
    if base:
        found = path.parent / base
        if not found.is_file():
            raise FileNotFoundError(f"{path}: base config {base!r} not found (looked for {found})")
        data = _merge(read_config_file(found), data)
    return data


def _merge(base: dict, over: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def config_from_args(path: str | None, overrides: list[str]) -> TrainConfig:
    """A TrainConfig from a YAML file plus `--group.key=value` overrides (values parsed as YAML)."""
    import yaml

    data = read_config_file(path) if path else {}
    keys = set(all_keys())
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ValueError(f"override {item!r} must look like --group.key=value (e.g. --optim.steps=200)")
        key, value = item[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in keys:
            raise ValueError(unknown_key_message(key, "override"))
        set_dotted(data, key, yaml.safe_load(value))
    return TrainConfig.from_dict(data, source=str(path) if path else "config")


def load_saved_config(data: dict, source: str = "train_config.json") -> TrainConfig:
    """The TrainConfig a run saved (nested; or flat, as runs before the nested config saved it)."""
    if "gem" not in data and "optim" not in data:
        data = migrate_flat(data)
    return TrainConfig.from_dict(data, source=source)


# Where each setting of the flat config (runs saved before 2026-12) lives now; None: no longer a setting.
FLAT_KEYS = {
    "model": "model", "k": "gem.k", "embed_max_length": "gem.max_length", "suffix_sees_bos": "gem.suffix_sees_bos",
    "sink_token": "gem.sink_token", "readout_head": "gem.readout_head", "readout_dim": "gem.readout_dim",
    "corpus": "rows.corpus", "heldout": "rows.heldout", "max_length": "rows.max_length", "p_plain": "rows.p_plain",
    "reconstruction_share": "rows.reconstruction_share", "min_part": "rows.min_part",
    "reconstruction_min_tokens": "rows.reconstruction_min_tokens", "pack": "rows.pack",
    "ntp_steps": "objective.ntp_steps", "alpha_cl": "objective.alpha_cl", "drop_rate": "objective.drop_rate",
    "logit_scale_init": "objective.logit_scale_init", "logit_scale_max": "objective.logit_scale_max",
    "positive": "extensions.positive", "span_views": "extensions.span_views",
    "anchor_weight": "extensions.anchor_weight", "distill_weight": "extensions.distill_weight",
    "distill_embedding_weight": "extensions.distill_embedding_weight", "distill_scale": "extensions.distill_scale",
    "teacher": "extensions.teacher", "head_lr_scale": "extensions.head_lr_scale", "head_init": "extensions.head_init",
    "head_init_texts": "extensions.head_init_texts", "head_refit": "extensions.head_refit",
    "steps": "optim.steps", "batch_size": "optim.batch_size", "grad_accum": "optim.grad_accum",
    "lr_ntp": "optim.lr_ntp", "lr_cl": "optim.lr_cl", "warmup_steps": "optim.warmup_steps",
    "min_lr_ratio": "optim.min_lr_ratio", "weight_decay": "optim.weight_decay", "grad_clip": "optim.grad_clip",
    "lora_r": "lora.r", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout", "lora_targets": "lora.targets",
    "train_backbone": "lora.train_backbone",
    "output_dir": "run.output_dir", "init_from": "run.init_from", "seed": "run.seed", "precision": "run.precision",
    "eval_every": "run.eval_every", "save_every": "run.save_every", "log_every": "run.log_every",
    "pack_views": None, "fused_loss": None,  # implementation switches: same numbers either way
}


def migrate_flat(flat: dict) -> dict:
    """A flat config dict (the format before the nested config) as a nested one."""
    out: dict = {}
    for key, value in flat.items():
        if key not in FLAT_KEYS:
            raise ValueError(unknown_key_message(key, "flat config"))
        if FLAT_KEYS[key] is not None:
            set_dotted(out, FLAT_KEYS[key], value)
    return out


def flat_items(cfg: TrainConfig) -> dict[str, Any]:
    """{dotted key: value} of every setting."""
    data = cfg.to_dict()
    out = {"model": data.pop("model")}
    for group, values in data.items():
        out.update({f"{group}.{k}": v for k, v in values.items()})
    return out


def config_diff(config: TrainConfig, reference: TrainConfig, ignore: tuple[str, ...] = ("run.output_dir",)) -> dict:
    """{dotted key: value in `config`} for every setting where `config` differs from `reference`
    (what an ablation changes relative to the recipe); keys in `ignore` are left out."""
    mine, theirs = flat_items(config), flat_items(reference)
    return {k: v for k, v in mine.items() if k not in ignore and v != theirs[k]}
