"""A GEM training step vs a plain causal-LM step on the same tokens; roofline; peak memory.

    python -m bench.train_step [--model smollm2-135m] [--batch 8] [--steps 3]

Both steps use the same model (LoRA r=16, as the recipe), optimizer and token ids. The GEM step
runs the NTP phase's work: the collator's rows (reconstruction and plain) under the GEM 4D mask.
The plain step runs the same ids with a causal mask and ordinary labels. Target: GEM / plain <= 1.10.
Roofline: ~6 x non-embedding params (full fine-tune) or ~4 x (LoRA: no weight gradients) FLOP per
token over the fp32 matrix-product rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource

import torch

from .common import best_of, matmul_flops, non_embedding_params


def main():
    from lab.gem.lm_loss import IGNORE_INDEX
    from lab.storage import read_jsonl
    from lab.training.collate import GemCollator
    from lab.training.config import TrainConfig
    from lab.training.data_order import example_indices
    from lab.training.losses import LogitScale, ntp_loss
    from lab.training.objective import GemObjective
    from lab.training.setup import prepare_model

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--corpus", default="data/build/wiki/train.jsonl")
    args = p.parse_args()
    cfg = TrainConfig(model=args.model, batch_size=args.batch, p_plain=0.8, max_length=128, precision="fp32")
    gem = prepare_model(cfg, torch.device("cpu"))
    corpus = [r["text"] for r in read_jsonl(args.corpus)]
    batch = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg, contrastive=False)(
        [{"text": corpus[i], "index": i} for i in example_indices(0, 0, cfg, len(corpus))])
    objective = GemObjective(gem.model, LogitScale())
    params = [q for q in objective.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def gem_step():
        objective(batch, 0.0)["backward"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    plain_mask = (batch["roles"] != 0).long()  # 2D padding mask: the model builds its causal mask
    plain_labels = torch.where(plain_mask.bool(), batch["input_ids"], IGNORE_INDEX)

    def plain_step():
        logits = gem.model(input_ids=batch["input_ids"], attention_mask=plain_mask).logits
        ntp_loss(logits, plain_labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t_plain = best_of(plain_step, repeats=3)
    t_gem = best_of(gem_step, repeats=3)
    tokens = int(plain_mask.sum())
    flops = matmul_flops(torch.float32)
    per_token = 4 * non_embedding_params(gem.model.get_base_model() if hasattr(gem.model, "get_base_model") else gem.model)
    print(json.dumps({
        "model": args.model, "rows": batch["input_ids"].shape[0], "padded_len": batch["input_ids"].shape[1],
        "real_tokens": tokens, "plain_step_s": t_plain, "gem_step_s": t_gem, "gem_over_plain": t_gem / t_plain,
        "gem_tokens_per_s": tokens / t_gem, "matmul_gflops_fp32": flops / 1e9,
        "fraction_of_fp32_roofline": (tokens / t_gem) / (flops / per_token),
        "fraction_counting_padding": (batch["input_ids"].numel() / t_gem) / (flops / per_token),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }, indent=2))


if __name__ == "__main__":
    main()
