"""encode() throughput vs sentence-transformers on the same backbone, and vs the roofline.

    python -m bench.encode [--model smollm2-135m] [--n 1000]

Side by side in one run, on the same 1,000 news sentences:
  * GEM Lab `encode(pooling="mean")` in its default dtype for this machine;
  * sentence-transformers with the same backbone + mean pooling, as users run it (its defaults:
    fp32, batch 32) and in the same dtype as ours;
  * tokens/s as a fraction of the roofline 2 x non-embedding-params FLOP per token over the
    matrix-product rate measured in the same run (for fp32 and bf16).
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from .common import best_of, matmul_flops, news_sentences, non_embedding_params


def sentence_transformer(folder, dtype):
    from sentence_transformers import SentenceTransformer, models

    tr = models.Transformer(str(folder), model_args={"dtype": dtype})
    if tr.tokenizer.pad_token is None:
        tr.tokenizer.pad_token = tr.tokenizer.eos_token
    pool = models.Pooling(tr.get_word_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[tr, pool], device="cpu")


def run(model_name: str, n: int, repeats: int) -> dict:
    import lab
    from lab.weights import prepare

    texts = news_sentences(n)
    gem = lab.load(model_name)
    ours_dtype = gem.dtype
    n_tokens = sum(len(x) for x in gem.tokenizer(texts, add_special_tokens=True)["input_ids"])
    folder = prepare(model_name)
    res = {"model": model_name, "texts": n, "tokens": n_tokens, "ours_dtype": str(ours_dtype),
           "threads": torch.get_num_threads()}
    res["ours_s"] = best_of(lambda: gem.encode(texts, pooling="mean", batch_size=32), repeats)
    st_default = sentence_transformer(folder, torch.float32)
    res["st_default_s"] = best_of(lambda: st_default.encode(texts), repeats)
    if ours_dtype != torch.float32:
        st_same = sentence_transformer(folder, ours_dtype)
        res["st_same_dtype_s"] = best_of(lambda: st_same.encode(texts), repeats)
    else:
        res["st_same_dtype_s"] = res["st_default_s"]
    res["speedup_vs_st_default"] = res["st_default_s"] / res["ours_s"]
    res["speedup_vs_st_same_dtype"] = res["st_same_dtype_s"] / res["ours_s"]
    flop_per_token = 2 * non_embedding_params(gem.model)
    for dt in (torch.float32, torch.bfloat16):
        res[f"matmul_gflops_{str(dt)[6:]}"] = matmul_flops(dt) / 1e9
    res["ours_tokens_per_s"] = n_tokens / res["ours_s"]
    peak = res[f"matmul_gflops_{str(ours_dtype)[6:]}"] * 1e9
    res["roofline_tokens_per_s"] = peak / flop_per_token
    res["fraction_of_roofline"] = res["ours_tokens_per_s"] / res["roofline_tokens_per_s"]
    res["fraction_of_bf16_roofline"] = res["ours_tokens_per_s"] / (res["matmul_gflops_bfloat16"] * 1e9 / flop_per_token)
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args.model, args.n, args.repeats), indent=2))


if __name__ == "__main__":
    main()
