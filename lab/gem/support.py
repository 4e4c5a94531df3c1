"""Which decoders GEM runs on, and a clear error for the rest.

GEM needs nothing from a model's code but the public interface of a transformers decoder-only LM
with attention: `attention_mask=` taking a 4D mask (or a dict per layer type), `position_ids=`, a
KV cache, `get_decoder()` and an input embedding to add rows to. `architecture_problem(model)`
names what a model lacks, with the fix; `check_architecture` raises it. The test matrix
(tests/test_architectures.py) runs llama, qwen2, gemma3, mistral, phi3 and smollm2-shaped models.
"""

from __future__ import annotations

import inspect

RECURRENT = {"mamba", "mamba2", "rwkv", "xlstm", "falcon_mamba", "recurrent_gemma"}
MASKABLE = ("sdpa", "eager", "flex_attention")


def architecture_problem(model) -> str | None:
    """Why GEM cannot run on `model` (a transformers *ForCausalLM, maybe under peft), or None."""
    from .forward import unwrap

    base = unwrap(model)
    config = getattr(base, "config", None)
    kind = getattr(config, "model_type", type(base).__name__)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return (f"{kind} is not a decoder-only LM: GEM appends tokens to a text and reads a causal decoder's "
                f"states; use a *ForCausalLM model (llama, qwen2, gemma3, mistral, phi3, ...)")
    if kind in RECURRENT or not getattr(config, "num_attention_heads", None):
        return (f"{kind} has no attention layers whose mask GEM could set (GEM's mask hides the prefix from the "
                f"suffix through attention); use a transformer decoder")
    impl = getattr(config, "_attn_implementation", None) or "sdpa"
    if impl not in MASKABLE:
        return (f"attn_implementation={impl!r} cannot take GEM's custom attention mask; load the model with "
                f"attn_implementation='sdpa' (the default) or 'eager'")
    try:
        decoder = base.get_decoder()
    except (AttributeError, NotImplementedError):
        return f"{type(base).__name__} has no get_decoder(): GEM reads the decoder's last hidden states"
    params = inspect.signature(decoder.forward).parameters
    missing = [p for p in ("attention_mask", "position_ids", "past_key_values") if p not in params]
    if missing and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return (f"{type(decoder).__name__}.forward takes no {', '.join(missing)}: GEM passes its mask, its "
                f"positions and a KV cache through them")
    return None


def check_architecture(model) -> None:
    """Raise a ValueError naming what `model` lacks for GEM, and the fix (see `architecture_problem`)."""
    problem = architecture_problem(model)
    if problem:
        raise ValueError(f"GEM cannot run on this model: {problem}")


def layer_linear_names(model) -> list[str]:
    """The distinct names of the linear layers inside the decoder's blocks (e.g. q_proj, ...,
    down_proj for llama; qkv_proj, o_proj, gate_up_proj, down_proj for phi3): LoRA's targets when
    the config leaves them to the code."""
    import torch.nn as nn

    from .forward import unwrap

    names: list[str] = []
    for name, module in unwrap(model).named_modules():
        last = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear) and ".layers." in f".{name}" and "lora_" not in name and last not in names:
            names.append(last)
    return names
