"""Training throughput: the reference GEM step vs the optimised one, side by side; the plain LM
step on the same ids; roofline; peak memory.

    python -m bench.train_step [--config configs/gem-smollm2-135m.yaml] [--repeats 3] [--device cuda]

One batch of the recipe (its batch size, row length, packing and positives) on the recipe's model
(LoRA r16, fp32 on CPU). Each variant is timed as a full optimizer step, median of `repeats` after
one warm-up, in both phases: NTP (alpha = 0) and mixed (alpha = alpha_cl, with the two contrastive
views). Variants:
    reference   full-vocabulary logits at every position (head-weight gradient thrown away by the
                LoRA hook), contrastive views right-padded
    optimised   `fused_loss` (the head runs only where a target is predicted, chunked, no (N, V)
                logits kept, no head-weight gradient beyond the GEM rows) + `pack_views`
    optimised_bf16  the optimised step with the model in bf16 (`precision: auto` on a CPU with native
                bf16, e.g. AVX512-BF16 / AMX; `--bf16 yes` forces it where bf16 is emulated)
    plain LM    the same ids with a 2-D padding mask and ordinary labels (NTP phase only)
Real tokens = the non-pad tokens of the NTP rows (the views are extra work in the mixed phase).
Roofline: 4 x non-embedding parameters FLOP per real token (LoRA: no weight gradients) over the
fp32 matrix-product rate measured in the same run. On CUDA (`--device cuda`) the bf16 step also
runs with FlexAttention (`optimised_bf16_flex`), and each bf16 variant reports its model FLOPs
utilisation: achieved FLOP/s (the same 4 x params per token) over the card's bf16 peak
(`--peak-tflops`, default the bf16 matrix-product rate measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import resource

import torch

from .common import best_of, matmul_flops, non_embedding_params


def _step(gem, cfg, batch, alpha, losses: dict, key: str, fused_loss: bool):
    from lab.training.losses import LogitScale
    from lab.training.objective import GemObjective

    objective = GemObjective(gem.model, LogitScale().to(gem.device), gem.suffix_sees_bos, fused_loss=fused_loss,
                             trainable_head_rows=gem.special_ids if cfg.lora.r > 0 else None)
    opt = torch.optim.AdamW([q for q in objective.parameters() if q.requires_grad], lr=1e-12)

    def run():
        loss = objective(batch, alpha)["backward"]
        loss.backward()
        losses[key] = float(loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        if gem.device.type == "cuda":
            torch.cuda.synchronize()
    return run


def main():
    from lab.gem.lm_loss import IGNORE_INDEX, ntp_loss
    from lab.gem.masks import Role
    from lab.storage import read_jsonl
    from lab.training.collate import GemCollator
    from lab.training.config_files import config_from_args
    from lab.training.data_order import article_partners, example_indices, training_example
    from lab.gem.forward import unwrap
    from lab.training.loop import batch_to_device
    from lab.training.setup import prepare_model

    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/gem-smollm2-135m.yaml")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's bf16 peak (default: measured)")
    p.add_argument("--bf16", choices=["auto", "yes", "no"], default="auto",
                   help="also time the optimised step in bf16 (auto: on CUDA and CPUs with native bf16)")
    args = p.parse_args()
    device = torch.device(args.device)
    cfg = config_from_args(args.config, []).updated({"run.precision": "fp32", "run.attention": "sdpa"})
    rows = read_jsonl(cfg.rows.corpus)
    partners = article_partners(rows, cfg.run.seed) if cfg.extensions.positive == "article" else None
    examples = [training_example(i, [r["text"] for r in rows], partners)
                for i in example_indices(0, 0, cfg, len(rows))]
    variants = {"reference": dict(fused_loss=False, pack_views=False), "optimised": dict(fused_loss=True, pack_views=True)}
    from lab.weights.dtypes import cpu_has_fast_bf16

    bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and (device.type == "cuda" or cpu_has_fast_bf16()))
    if bf16:  # the same step with the model in bf16, as `precision: auto` trains on such machines
        variants["optimised_bf16"] = dict(fused_loss=True, pack_views=True, precision="bf16")
    if bf16 and device.type == "cuda":
        variants["optimised_bf16_flex"] = dict(fused_loss=True, pack_views=True, precision="bf16", attention="flex_attention")
    models: dict = {}
    out = {"config": args.config, "device": str(device), "threads": torch.get_num_threads(),
           "cpu_has_fast_bf16": cpu_has_fast_bf16()}
    losses: dict = {}
    for name, switches in variants.items():
        vcfg = cfg.updated({"run.precision": switches.get("precision", "fp32"),
                            "run.attention": switches.get("attention", "sdpa")})
        key = (vcfg.run.precision, vcfg.run.attention)
        if key not in models:
            models[key] = prepare_model(vcfg, device)
        vgem = models[key]
        batch = GemCollator(vgem.tokenizer, vgem.special_ids, vgem.bos, vcfg, pack_views=switches["pack_views"])(examples)
        batch = batch_to_device(batch, device)
        for phase, alpha in (("ntp", 0.0), ("mixed", cfg.objective.alpha_cl)):
            torch.manual_seed(0)  # the same dropout views in every variant
            run = _step(vgem, vcfg, batch, alpha, losses, f"{name}_{phase}", switches["fused_loss"])
            out[f"{name}_{phase}_step_s"] = best_of(run, repeats=args.repeats)
            out[f"{name}_{phase}_loss"] = losses[f"{name}_{phase}"]
        out[f"{name}_positions"] = {"rows": batch["input_ids"].numel(), "query": batch["query"]["input_ids"].numel(),
                                    "positive": batch["positive"]["input_ids"].numel()}
    gem = models[("fp32", "sdpa")]
    real = (batch["roles"] != Role.PAD)
    labels = torch.where(real, batch["input_ids"], IGNORE_INDEX)

    def plain_step():
        logits = gem.model(input_ids=batch["input_ids"], attention_mask=real.long()).logits
        ntp_loss(logits, labels).backward()
        gem.model.zero_grad(set_to_none=True)

    out["plain_lm_ntp_step_s"] = best_of(plain_step, repeats=args.repeats)
    tokens = int(real.sum())
    flops = 4 * non_embedding_params(unwrap(gem.model))
    roofline = matmul_flops(torch.float32, device=device) / flops
    out.update(real_tokens=tokens, roofline_tokens_per_s=roofline)
    if bf16:
        peak = args.peak_tflops * 1e12 if args.peak_tflops else matmul_flops(torch.bfloat16, device=device)
        out["bf16_peak_tflops"] = peak / 1e12
        out["bf16_roofline_tokens_per_s"] = peak / flops
    for name in variants:
        for phase in ("ntp", "mixed"):
            tps = tokens / out[f"{name}_{phase}_step_s"]
            out[f"{name}_{phase}_tokens_per_s"] = tps
            out[f"{name}_{phase}_fraction_of_roofline"] = tps / roofline  # of the fp32 roofline
            if "bf16" in name:  # model FLOPs utilisation of the bf16 peak
                out[f"{name}_{phase}_mfu"] = tps / out["bf16_roofline_tokens_per_s"]
    for phase in ("ntp", "mixed"):
        for name in variants:
            if name != "reference":
                suffix = "" if name == "optimised" else "_" + name.removeprefix("optimised_")
                out[f"speedup{suffix}_{phase}"] = out[f"reference_{phase}_step_s"] / out[f"{name}_{phase}_step_s"]
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device.type == "cuda":
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
