"""The model a run trains: the base model with fresh GEM tokens, LoRA-wrapped, in its precision."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..gem import GemModel, add_new_gem_tokens
from ..gem.forward import unwrap
from ..gem.support import check_architecture, layer_linear_names
from ..storage import load_safetensors
from ..weights.checkpoints import ADAPTER_DIR, WEIGHTS_FILE, load_token_rows
from ..weights.dtypes import cpu_has_fast_bf16
from ..weights.loading import load
from .config import DEFAULT_LORA_TARGETS, TrainConfig

log = logging.getLogger(__name__)


def train_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """bf16 / fp32 as configured; "auto": bf16 where it is fast (CUDA, native-bf16 CPUs), else fp32."""
    if cfg.run.precision == "bf16":
        return torch.bfloat16
    if cfg.run.precision == "fp32":
        return torch.float32
    return torch.bfloat16 if device.type == "cuda" or cpu_has_fast_bf16() else torch.float32


def train_attention(cfg: TrainConfig, device: torch.device) -> str:
    """The attention implementation a run trains with: `cfg.run.attention`, "auto" resolved by
    `lab.gem.flex.attention_for`; FlexAttention on a CPU is refused (torch has no CPU backward)."""
    from ..gem.flex import FLEX, attention_for

    choice = attention_for(device, cfg.rows.max_length) if cfg.run.attention == "auto" else cfg.run.attention
    if choice == FLEX and torch.device(device).type != "cuda":
        raise ValueError("run.attention: flex_attention trains only on a GPU (torch has no FlexAttention backward "
                         "on a CPU); use run.attention: auto or sdpa here")
    return choice


def only_rows_grad_hook(ids: list[int]):
    """Gradient hook keeping only the given rows of an embedding's gradient (new GEM tokens)."""
    def hook(grad):
        mask = torch.zeros(grad.shape[0], 1, dtype=grad.dtype, device=grad.device)
        mask[ids] = 1
        return grad * mask
    return hook


def lora_targets(model, cfg: TrainConfig) -> list[str]:
    """The modules LoRA adapts. Left at their default, the code picks them for the family: every
    linear layer in the decoder blocks (q/k/v/o/gate/up/down_proj for llama, qwen2, gemma3, mistral;
    qkv_proj, o_proj, gate_up_proj, down_proj for phi3). Set by hand, each must exist."""
    found = layer_linear_names(model)
    if not found:
        raise ValueError(f"{cfg.model} has no linear layers in its decoder blocks for LoRA; set lora.r: 0 "
                         f"(full fine-tune) or lora.train_backbone: false")
    if tuple(cfg.lora.targets) == DEFAULT_LORA_TARGETS:
        if set(found) != set(DEFAULT_LORA_TARGETS):
            log.info("LoRA on %s's linear layers: %s", cfg.model, ", ".join(found))
        return found
    missing = [t for t in cfg.lora.targets if t not in found]
    if missing:
        raise ValueError(f"lora.targets {missing} are not linear layers of {cfg.model}'s decoder blocks; its linear "
                         f"layers are {found} (or leave lora.targets at its default to use them all)")
    return list(cfg.lora.targets)


def _wrap_lora(model, cfg: TrainConfig, special_ids: list[int]):
    from peft import LoraConfig, get_peft_model

    model.requires_grad_(False)
    targets = lora_targets(model, cfg)
    model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                             lora_dropout=cfg.lora.dropout, target_modules=targets))
    return _train_gem_rows(model, special_ids)  # after peft, which freezes every non-adapter weight


def _train_gem_rows(model, special_ids: list[int]):
    """Make the input embedding trainable, its gradient kept to the GEM rows only."""
    emb = unwrap(model).get_input_embeddings().weight
    emb.requires_grad_(True)
    emb.register_hook(only_rows_grad_hook(special_ids))
    return model


def prepare_model(cfg: TrainConfig, device: torch.device) -> GemModel:
    """The base model with k fresh GEM tokens, in training mode; LoRA-wrapped if lora_r > 0. The
    new input rows are always trainable (the rest of the embedding matrix stays frozen under LoRA);
    with `train_backbone=False` they (and the readout head, if any) are all that trains."""
    base = load(cfg.model, dtype="float32", device="cpu")
    check_architecture(base.model)
    gem = add_new_gem_tokens(base, config=cfg.gem)
    if not cfg.lora.train_backbone:
        model = _freeze_all_but_gem_rows(gem.model, gem.special_ids)
    elif cfg.lora.r > 0:
        model = _wrap_lora(gem.model, cfg, gem.special_ids)
    else:
        model = gem.model
    model.to(device=device, dtype=train_dtype(cfg, device))
    unwrap(model).set_attn_implementation(train_attention(cfg, device))
    model.train()
    prepared = GemModel(model, gem.tokenizer, gem.gem_config, name=cfg.model)
    if prepared.readout_head is not None:
        prepared.readout_head.train()
    return prepared


def _freeze_all_but_gem_rows(model, special_ids: list[int]):
    """Every weight frozen except the GEM rows of the input embedding: the language model is kept
    exactly (plain text never meets a GEM row)."""
    model.requires_grad_(False)
    return _train_gem_rows(model, special_ids)


def load_weights_into(gem: GemModel, ckpt: Path) -> None:
    """Load a checkpoint's trained weights (token rows, adapter or full weights) into `gem.model`."""
    from peft import set_peft_model_state_dict

    load_token_rows(gem.model, gem.special_ids, ckpt)
    if (ckpt / ADAPTER_DIR).is_dir():
        saved = load_safetensors(ckpt / ADAPTER_DIR / "adapter_model.safetensors")
        set_peft_model_state_dict(gem.model, grown_adapter_state(gem.model, saved, saved_lora_scale(ckpt)))
    if (ckpt / WEIGHTS_FILE).is_file():
        unwrap(gem.model).load_state_dict(load_safetensors(ckpt / WEIGHTS_FILE), strict=False)
    if gem.readout_head is not None:
        gem.readout_head.load(ckpt)


def saved_lora_scale(ckpt: Path) -> float:
    """alpha / r of a checkpoint's LoRA adapter (alpha / sqrt(r) under rsLoRA): what its B @ A is multiplied by."""
    import json

    lora = json.loads((ckpt / ADAPTER_DIR / "adapter_config.json").read_text())
    return lora["lora_alpha"] / (lora["r"] ** 0.5 if lora.get("use_rslora") else lora["r"])


def grown_adapter_state(model, saved: dict[str, torch.Tensor], saved_scale: float) -> dict[str, torch.Tensor]:
    """`saved` (a LoRA state dict of rank r) fitted to `model`'s adapter of rank R >= r, computing the same
    function: each A (r, in) fills the first r rows of the model's A (R, in), the rest keeping their fresh
    initialisation; each B (out, r) fills the first r columns of a zero B (out, R), rescaled by
    saved_scale / the model's scale. So B' @ A' * scale' = B @ A * scale exactly, and the R - r new
    directions start at zero and can train (growing an adapter's rank from a trained checkpoint).
    Same rank and scale: `saved` unchanged; same rank, another alpha: B rescaled, so the function stays."""
    from peft import get_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    current = get_peft_model_state_dict(model)
    scale = next((m.scaling["default"] for m in model.modules() if isinstance(m, LoraLayer)), saved_scale)
    ratio = saved_scale / scale
    grown = {}
    for key, value in saved.items():
        target = current.get(key)
        if target is None or (target.shape == value.shape and ("lora_B" not in key or ratio == 1)):
            grown[key] = value
        elif "lora_A" in key and value.shape[1:] == target.shape[1:] and value.shape[0] < target.shape[0]:
            a = target.detach().clone().to(value.dtype)
            a[: value.shape[0]] = value
            grown[key] = a
        elif "lora_B" in key and value.shape[0] == target.shape[0] and value.shape[1] <= target.shape[1]:
            b = torch.zeros(target.shape, dtype=torch.float32)
            b[:, : value.shape[1]] = value.float() * ratio
            grown[key] = b.to(value.dtype)
        else:
            raise ValueError(f"adapter weight {key}: checkpoint shape {tuple(value.shape)} does not fit the model's "
                             f"{tuple(target.shape)}; an adapter can only grow in rank (lora.r >= the checkpoint's)")
    return grown


def init_checkpoint(cfg: TrainConfig) -> Path:
    """The GEM checkpoint folder `cfg.run.init_from` names (a folder, a run, or a shipped name), checked to
    fit the model this config builds: same base model, k, sink token and readout head, and (for an
    adapter) the same LoRA targets and a rank at least the checkpoint's (a larger one grows the adapter:
    `grown_adapter_state`)."""
    import json

    from ..gem import GemConfig
    from ..weights.loading import local_path

    name = cfg.run.init_from
    path = local_path(name)
    if not (path / GemConfig.FILENAME).is_file():
        raise FileNotFoundError(f"init_from: {name!r} is not a GEM checkpoint (no {GemConfig.FILENAME} in {path}); "
                                f"name a checkpoint folder, a run (runs/NAME) or a shipped model")
    saved = GemConfig.load(path)
    wanted = {"base_model": cfg.model, "k": cfg.gem.k, "sink_token": cfg.gem.sink_token, "readout_head": cfg.gem.readout_head,
              "readout_dim": cfg.gem.readout_dim if cfg.gem.readout_head else saved.readout_dim}
    if cfg.gem.sink_token == "auto":  # chosen per tokenizer when the tokens were added: whatever it chose
        wanted.pop("sink_token")
    differ = [f"{key}: checkpoint {getattr(saved, key)!r}, config {value!r}" for key, value in wanted.items()
              if getattr(saved, key) != value]
    adapter = path / ADAPTER_DIR / "adapter_config.json"
    if adapter.is_file():
        lora = json.loads(adapter.read_text())
        if lora.get("r", 0) > cfg.lora.r:  # a larger rank grows the adapter (grown_adapter_state)
            differ.append(f"lora.r: checkpoint {lora.get('r')}, config {cfg.lora.r} (a run may raise the rank, not lower it)")
        targets = set(lora.get("target_modules") or [])
        if targets and tuple(cfg.lora.targets) != DEFAULT_LORA_TARGETS and targets != set(cfg.lora.targets):
            differ.append(f"lora.targets: checkpoint {sorted(targets)}, config {sorted(cfg.lora.targets)}")
    elif cfg.lora.r > 0:
        differ.append("the checkpoint has no LoRA adapter (a full fine-tune or a merged export): set lora.r: 0")
    if differ:
        raise ValueError(f"init_from {name!r} does not fit this config; set these to the checkpoint's values: "
                         + "; ".join(differ))
    return path


def anchor_reference(cfg: TrainConfig, device: torch.device) -> GemModel | None:
    """None without `cfg.extensions.anchor_weight`; else the model `cfg.run.init_from` names, built as the trained
    one is (same dtype and device), frozen, in eval mode: what the anchor term holds the embedding
    to. Loaded from init_from also on --resume, so the target never moves."""
    if cfg.extensions.anchor_weight <= 0:
        return None
    reference = prepare_model(cfg, device)
    load_weights_into(reference, init_checkpoint(cfg))
    reference.model.requires_grad_(False)
    reference.model.eval()
    if reference.readout_head is not None:
        reference.readout_head.requires_grad_(False)
        reference.readout_head.eval()
    log.info("anchor: the embedding is held to %s's (weight %.2f)", cfg.run.init_from, cfg.extensions.anchor_weight)
    return reference


def distillation_teacher(cfg: TrainConfig):
    """None without distillation; else callable(texts) -> (n, t) float32 unit-norm embeddings of
    `cfg.extensions.teacher` (an offline sentence encoder in inference mode, on the GPU when there is one)."""
    if cfg.extensions.distill_weight <= 0 and cfg.extensions.distill_embedding_weight <= 0:
        return None
    from ..weights.encoders import load_encoder

    encoder = load_encoder(cfg.extensions.teacher, device="cuda" if torch.cuda.is_available() else "cpu")
    log.info("distilling from %s (weight %.2f)", cfg.extensions.teacher, cfg.extensions.distill_weight)

    return _encoder_fn(encoder)


def _encoder_fn(encoder):
    """callable(texts) -> (n, t) unit-norm numpy embeddings of a sentence-transformers encoder."""
    def embed(texts: list[str]):
        return encoder.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                              show_progress_bar=False)
    return embed


def extension_terms(cfg: TrainConfig, device: torch.device) -> tuple[object, list]:
    """(the distillation teacher or None, the objective's extension terms with non-zero weight):
    anchor, similarity distillation, embedding distillation (`lab.training.terms`). A run with no
    contrastive phase (`objective.ntp_steps` = `optim.steps`) gets no distillation terms (they act only
    on that phase's views), and the teacher only if the ridge head is fitted (`head_fit_steps`)."""
    from .terms import AnchorTerm, EmbeddingDistillation, SimilarityDistillation

    from .head_init import head_fit_steps

    x = cfg.extensions
    terms = []
    if x.anchor_weight > 0:
        terms.append(AnchorTerm(x.anchor_weight, anchor_reference(cfg, device)))
    contrastive = cfg.objective.ntp_steps < cfg.optim.steps
    teacher = distillation_teacher(cfg) if contrastive else None
    if teacher is None and head_fit_steps(cfg):
        from ..weights.encoders import load_encoder

        teacher = _encoder_fn(load_encoder(x.teacher, device="cuda" if torch.cuda.is_available() else "cpu"))
    if not contrastive:  # no contrastive phase: no views for the distillation terms to act on
        if x.distill_weight > 0 or x.distill_embedding_weight > 0:
            log.info("no contrastive phase (objective.ntp_steps = optim.steps): the distillation terms never act%s",
                     "" if teacher is not None else f", so {x.teacher} is not loaded")
        return teacher, terms
    if x.distill_weight > 0:
        terms.append(SimilarityDistillation(x.distill_weight, teacher, x.distill_scale))
    if x.distill_embedding_weight > 0:
        terms.append(EmbeddingDistillation(x.distill_embedding_weight, teacher))
    return teacher, terms
